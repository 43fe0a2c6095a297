using System.Diagnostics;
using System.IO.Compression;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Diffusion.Tests.Persistence;

/// <summary>mlContext.Model.Save/Load keeps weights, config and schedule: identical images before and after, in this process and another.</summary>
[TestClass]
public class ModelPersistenceTests
{
    private static TestModel _fixture = null!;
    private static MLContext _ml => _fixture.Ml;
    private static IDataView _data => _fixture.Data;
    private static DiffusionModel _model => _fixture.Model;
    private static string _dir => _fixture.Directory;

    [ClassInitialize]
    public static void Fit(TestContext _) => _fixture = TestModel.Train("diffusion-persistence", steps: 3, o =>
    {
        o.Schedule = NoiseSchedule.Cosine;
        o.Channels = 3;
    });

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    private static string SaveModel()
    {
        string path = Path.Combine(_dir, Guid.NewGuid().ToString("N") + ".zip");
        _ml.Model.Save(_model, _data.Schema, path);
        return path;
    }

    [TestMethod]
    public void SaveAndLoadGiveIdenticalImages()
    {
        string path = SaveModel();
        var loaded = (DiffusionModel)new MLContext().Model.Load(path, out var inputSchema);
        Assert.IsNotNull(inputSchema.GetColumnOrNull("Label")); // the input schema is saved too (image columns are not savable)
        Assert.AreEqual(_model.Config.Network, loaded.Config.Network);
        Assert.AreEqual(NoiseSchedule.Cosine, loaded.Config.Schedule);
        Assert.AreEqual(3, loaded.Channels);
        Assert.AreEqual(_model.Config.TrainedSteps, loaded.Config.TrainedSteps);
        var options = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 5, Seed = 99 };
        var before = _model.Generate(3, options).Select(TestData.Pixels).ToList();
        var after = loaded.Generate(3, options).Select(TestData.Pixels).ToList();
        for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(before[i], after[i], $"image {i}");
        // The default sampler travels with the model: Transform is identical too.
        var t1 = _model.Transform(_ml.Generative.CreateRequests(2, 5)).GetColumn<MLImage>("GeneratedImage").Select(TestData.Pixels).ToList();
        var t2 = loaded.Transform(_ml.Generative.CreateRequests(2, 5)).GetColumn<MLImage>("GeneratedImage").Select(TestData.Pixels).ToList();
        for (int i = 0; i < 2; i++) CollectionAssert.AreEqual(t1[i], t2[i]);
        loaded.Dispose();
    }

    [TestMethod]
    public void ZipHoldsWeightsAndVersionedConfig()
    {
        string path = SaveModel();
        using var zip = ZipFile.OpenRead(path);
        var names = zip.Entries.Select(e => e.FullName).ToList();
        Assert.IsTrue(names.Any(n => n.EndsWith("TorchWeights.bin")), string.Join(", ", names));
        var weights = zip.Entries.First(e => e.FullName.EndsWith("TorchWeights.bin"));
        Assert.IsTrue(weights.Length > _model.ParameterCount * 4, "the weights are stored in float32");
        Assert.IsTrue(names.Any(n => n.EndsWith("Model.key")), string.Join(", ", names));
    }

    [TestMethod]
    public void CorruptZipFailsClearly()
    {
        string path = SaveModel();
        string bad = Path.Combine(_dir, "truncated.zip");
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(bad, bytes.AsSpan(0, bytes.Length / 2).ToArray());
        Assert.Throws<Exception>(() => new MLContext().Model.Load(bad, out _));
    }

    [TestMethod]
    public void LoadedModelGeneratesTheSameImagesInAFreshProcess()
    {
        string path = SaveModel();
        var options = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 5, Seed = 4 };
        var expected = _model.Generate(4, options);
        using var grid = Microsoft.ML.Diffusion.ImageGrid.Create(expected);
        string png = Path.Combine(_dir, "child.png");

        string samples = SamplesApp.Path();
        var psi = new ProcessStartInfo("dotnet", $"\"{samples}\" generate --model \"{path}\" --count 4 --sampler ddim --steps 5 --seed 4 --out \"{png}\"")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        using var child = Process.Start(psi)!;
        string stdout = child.StandardOutput.ReadToEnd(), stderr = child.StandardError.ReadToEnd();
        Assert.IsTrue(child.WaitForExit(120_000), "the child process hung");
        Assert.AreEqual(0, child.ExitCode, stdout + stderr);

        using var written = MLImage.CreateFromFile(png);
        Assert.AreEqual(grid.Width, written.Width);
        Assert.AreEqual(grid.Height, written.Height);
        CollectionAssert.AreEqual(grid.GetBGRPixels, written.GetBGRPixels, "the other process generated different pixels");
    }
}

/// <summary>Finds the built samples app (built with the solution).</summary>
internal static class SamplesApp
{
    public static string Path()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null && !File.Exists(System.IO.Path.Combine(dir.FullName, "Diffusion.MLNet.sln"))) dir = dir.Parent;
        Assert.IsNotNull(dir, "repository root not found above " + AppContext.BaseDirectory);
        string config = AppContext.BaseDirectory.Contains("/Debug/") ? "Debug" : "Release";
        string path = System.IO.Path.Combine(dir.FullName, "src", "Samples", "bin", config, "net10.0", "Microsoft.ML.Diffusion.Samples.dll");
        Assert.IsTrue(File.Exists(path), $"the samples app is not built at {path}; build the solution first");
        return path;
    }
}
