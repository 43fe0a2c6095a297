using System.IO.Compression;
using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion.Tests.Persistence;

/// <summary>Issue 15, items 7 and 8: LoadDiffusionModel names the file and what it expected for files that are not diffusion
/// models, and finds the model in a saved pipeline (TransformerChain), as GetDiffusionModel does on a loaded one.</summary>
[TestClass]
public class ModelFileLoadingTests
{
    private static TestModel _fixture = null!;
    private static MLContext Ml => _fixture.Ml;
    private static string Dir => _fixture.Directory;

    [ClassInitialize]
    public static void Init(TestContext _) => _fixture = TestModel.Shared("diffusion-loading");

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    private static string PathFor(string name) => Path.Combine(Dir, Guid.NewGuid().ToString("N") + "-" + name);

    private static InvalidDataException LoadFails(string path)
    {
        var e = Assert.ThrowsExactly<InvalidDataException>(() => new MLContext().Generative.LoadDiffusionModel(path).Dispose());
        StringAssert.Contains(e.Message, path, "the error names the file");
        StringAssert.Contains(e.Message, "DiffusionModel", "the error says what was expected");
        return e;
    }

    [TestMethod]
    public void AZipOfATextFileNamesTheFileAndWhatWasExpected()
    {
        string path = PathFor("text.zip");
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Create))
        using (var writer = new StreamWriter(zip.CreateEntry("readme.txt").Open()))
            writer.Write("not a model");
        LoadFails(path);
    }

    [TestMethod]
    public void ASavedNormalizePipelineNamesTheFileAndWhatItHolds()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[] { new NumberRow { X = 1 }, new NumberRow { X = 3 } });
        var normalizer = ml.Transforms.NormalizeMinMax("X").Append(ml.Transforms.CopyColumns("Y", "X")).Fit(data);
        string path = PathFor("normalize.zip");
        ml.Model.Save(normalizer, data.Schema, path);
        var e = LoadFails(path);
        StringAssert.Contains(e.Message, "TransformerChain of [");
        StringAssert.Contains(e.Message, "NormalizingTransformer");
    }

    [TestMethod]
    public void ATruncatedModelZipNamesTheFile()
    {
        string saved = PathFor("model.zip");
        Ml.Model.Save(_fixture.Model, _fixture.Data.Schema, saved);
        var bytes = File.ReadAllBytes(saved);
        string path = PathFor("truncated.zip");
        File.WriteAllBytes(path, bytes[..(bytes.Length / 3)]);
        LoadFails(path);
    }

    [TestMethod]
    public void ATextFileNamesTheFile()
    {
        string path = PathFor("model.zip");
        File.WriteAllText(path, "this is a text file, not a zip");
        LoadFails(path);
    }

    [TestMethod]
    public void AMissingFileIsFileNotFound()
    {
        string path = PathFor("missing.zip");
        var e = Assert.ThrowsExactly<FileNotFoundException>(() => new MLContext().Generative.LoadDiffusionModel(path));
        StringAssert.Contains(e.Message, path);
    }

    [TestMethod]
    public void ASavedPipelineLoadsAndGivesItsDiffusionModel()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(TestData.Squares(8).ToList());
        // ResizeImages -> ExtractPixels -> Diffusion (the trainer reads ExtractPixels' planar float vectors).
        var pipeline = ml.Transforms.ResizeImages("Resized", 8, 8, "Image")
            .Append(ml.Transforms.ExtractPixels("Pixels", "Resized"))
            .Append(ml.Generative.Diffusion(With(TestData.TinyOptions(steps: 1), o => o.ImageColumnName = "Pixels")));
        var chain = pipeline.Fit(data);
        string path = PathFor("pipeline.zip");
        ml.Model.Save(chain, data.Schema, path);
        chain.LastTransformer.Dispose();

        var loaded = ml.Model.Load(path, out _);
        Assert.IsNotInstanceOfType<DiffusionModel>(loaded, "a saved pipeline loads as a chain: a cast would throw");
        using var model = loaded.GetDiffusionModel();
        Assert.AreEqual(8, model.ImageSize);
        using var direct = new MLContext().Generative.LoadDiffusionModel(path);
        Assert.AreEqual(model.Config, direct.Config);

        // Nested chains are searched too.
        var nested = new TransformerChain<ITransformer>(loaded, new TransformerChain<ITransformer>());
        Assert.AreSame(model, nested.GetDiffusionModel());
    }

    [TestMethod]
    public void GetDiffusionModelOfAChainWithoutOneSaysWhatItFound()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[] { new NumberRow { X = 1 } });
        var chain = ml.Transforms.NormalizeMinMax("X").Fit(data);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => ((ITransformer)chain).GetDiffusionModel());
        StringAssert.Contains(e.Message, "NormalizingTransformer");
        StringAssert.Contains(e.Message, "no DiffusionModel");
        Assert.AreSame(_fixture.Model, _fixture.Model.GetDiffusionModel());
    }

    private static DiffusionTrainer.Options With(DiffusionTrainer.Options options, Action<DiffusionTrainer.Options> change)
    {
        change(options);
        return options;
    }

    private sealed class NumberRow
    {
        public float X { get; set; }
    }
}
