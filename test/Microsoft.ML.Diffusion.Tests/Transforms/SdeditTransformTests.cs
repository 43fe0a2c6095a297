using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Transforms.Image;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Transforms;

/// <summary>mlContext.Generative.ImageToImage (SDEdit, Meng et al. 2022): end points, schema, save/load, batch independence,
/// PredictionEngine, labels, bad input.</summary>
[TestClass]
public sealed class SdeditTransformTests
{
    private static TestModel _fixture = null!;
    private static MLContext _ml => _fixture.Ml;
    private static DiffusionModel _model => _fixture.Model;

    public sealed class Output
    {
        [ImageType(8, 8)]
        public MLImage Edited { get; set; } = null!;
    }

    [ClassInitialize]
    public static void Fit(TestContext _) => _fixture = TestModel.Shared("diffusion-sdedit");

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    private static ImageToImageOptions Options(float strength, SamplerKind kind = SamplerKind.Ddim, int steps = 10, uint seed = 5, int batch = 16) => new()
    {
        Strength = strength,
        Sampler = new SamplerOptions { Sampler = kind, Steps = steps, Seed = seed, BatchSize = batch },
    };

    private static IDataView Rows(int n) => _ml.Data.LoadFromEnumerable(TestData.Squares(n, seed: 9).ToList());

    private static List<byte[]> Edit(IDataView data, ImageToImageOptions options, DiffusionModel? model = null) =>
        _ml.Generative.ImageToImage(model ?? _model, "Edited", "Image", options).Fit(data).Transform(data)
            .GetColumn<MLImage>("Edited").Select(TestData.Pixels).ToList();

    [TestMethod]
    public void StrengthZero_ReturnsTheInput()
    {
        var data = Rows(3);
        var transformer = _ml.Generative.ImageToImage(_model, "Edited", "Image", Options(0f)).Fit(data);
        Assert.AreEqual(0, transformer.DenoisingSteps);
        var output = transformer.Transform(data);
        Assert.AreEqual(new ImageDataViewType(8, 8), output.Schema["Edited"].Type);
        Assert.IsNotNull(output.Schema.GetColumnOrNull("Label"), "input columns pass through");
        var inputs = data.GetColumn<MLImage>("Image").Select(TestData.Pixels).ToList();
        var edited = output.GetColumn<MLImage>("Edited").Select(TestData.Pixels).ToList();
        for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(inputs[i], edited[i], $"row {i}");
        // A strength below 1/N runs no step either (int(10 * 0.05) = 0).
        CollectionAssert.AreEqual(inputs[0], Edit(data, Options(0.05f))[0]);
    }

    [TestMethod]
    [DataRow(SamplerKind.Ddim)]
    [DataRow(SamplerKind.EulerKarras)]
    [DataRow(SamplerKind.HeunKarras)]
    public void StrengthOne_IsGenerationWithTheRowsSeeds(SamplerKind kind)
    {
        var data = Rows(3);
        var options = Options(1f, kind, steps: 4);
        var edited = Edit(data, options);
        var generated = _model.Generate(3, options.Sampler).Select(TestData.Pixels).ToList();
        for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(generated[i], edited[i], $"{kind}, row {i}");
    }

    [TestMethod]
    public void MiddleStrength_KeepsTheImageCloserThanGeneration()
    {
        var data = Rows(4);
        var inputs = data.GetColumn<MLImage>("Image").Select(TestData.Pixels).ToList();
        double Distance(List<byte[]> images) => images.Select((p, i) => p.Zip(inputs[i], (a, b) => Math.Abs(a - b)).Average()).Average();
        double low = Distance(Edit(data, Options(0.3f))), high = Distance(Edit(data, Options(1f)));
        Assert.IsGreaterThan(0.0, low, "strength 0.3 changes the images");
        Assert.IsLessThan(high, low, "strength 0.3 stays closer to the inputs than generation");
    }

    [TestMethod]
    public void RowOutput_DependsOnItsSeedOnly_NotOnTheBatch()
    {
        var data = Rows(5);
        var together = Edit(data, Options(0.6f, batch: 16));
        var apart = Edit(data, Options(0.6f, batch: 2));
        for (int i = 0; i < 5; i++) CollectionAssert.AreEqual(together[i], apart[i], $"row {i}");
        // Rows 1..4 with seed 6 are the rows 1..4 of seed 5 shifted by one: the same outputs as rows 1..4 above.
        var shifted = Edit(_ml.Data.TakeRows(_ml.Data.SkipRows(data, 1), 4), Options(0.6f, seed: 6));
        for (int i = 0; i < 4; i++) CollectionAssert.AreEqual(together[i + 1], shifted[i], $"row {i + 1}");
    }

    [TestMethod]
    public void SaveAndLoad_GiveIdenticalOutput()
    {
        var data = Rows(3);
        var options = Options(0.6f, SamplerKind.DpmSolverPlusPlus, steps: 6);
        options.Sampler!.UseKarrasSigmas = true;
        var transformer = _ml.Generative.ImageToImage(_model, "Edited", "Image", options).Fit(data);
        string path = Path.Combine(_fixture.Directory, "sdedit.zip");
        _ml.Model.Save(transformer, data.Schema, path);
        using var loaded = (SdeditTransformer)new MLContext().Model.Load(path, out _);
        Assert.AreEqual(0.6f, loaded.Options.Strength);
        Assert.AreEqual(SamplerKind.DpmSolverPlusPlus, loaded.Options.Sampler!.Sampler);
        Assert.AreEqual(6, loaded.Options.Sampler!.Steps);
        Assert.AreEqual(5u, loaded.Options.Sampler!.Seed);
        Assert.IsTrue(loaded.Options.Sampler!.UseKarrasSigmas);
        Assert.AreEqual(3, loaded.DenoisingSteps);
        Assert.AreEqual(_model.Config.Network, loaded.Model.Config.Network);
        var before = transformer.Transform(data).GetColumn<MLImage>("Edited").Select(TestData.Pixels).ToList();
        var after = loaded.Transform(data).GetColumn<MLImage>("Edited").Select(TestData.Pixels).ToList();
        for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(before[i], after[i], $"row {i}");
    }

    [TestMethod]
    public void PredictionEngine_EqualsTransform()
    {
        var rows = TestData.Squares(2, seed: 9).ToList();
        var data = _ml.Data.LoadFromEnumerable(rows);
        var transformer = _ml.Generative.ImageToImage(_model, "Edited", "Image", Options(0.6f)).Fit(data);
        var expected = transformer.Transform(data).GetColumn<MLImage>("Edited").Select(TestData.Pixels).First();
        var engine = _ml.Model.CreatePredictionEngine<TestData.Image8, Output>(transformer);
        CollectionAssert.AreEqual(expected, TestData.Pixels(engine.Predict(rows[0]).Edited));
    }

    [TestMethod]
    public void FlatOverload_UsesTheModelsSamplerWithTheGivenKnobs()
    {
        var data = Rows(2);
        var flat = _ml.Generative.ImageToImage(_model, "Edited", "Image", strength: 0.5f, steps: 8, seed: 2).Fit(data);
        Assert.AreEqual(0.5f, flat.Options.Strength);
        Assert.AreEqual(_model.DefaultSampler.Sampler, flat.Options.Sampler!.Sampler);
        Assert.AreEqual(4, flat.DenoisingSteps);
        var options = _model.DefaultSampler;
        options.Steps = 8;
        options.Seed = 2;
        var expected = Edit(data, new ImageToImageOptions { Strength = 0.5f, Sampler = options });
        var actual = flat.Transform(data).GetColumn<MLImage>("Edited").Select(TestData.Pixels).ToList();
        for (int i = 0; i < 2; i++) CollectionAssert.AreEqual(expected[i], actual[i], $"row {i}");
        var euler = _ml.Generative.ImageToImage(_model, "Edited", "Image", 0.5f, SamplerKind.EulerKarras).Fit(data);
        Assert.AreEqual(SamplerKind.EulerKarras, euler.Options.Sampler!.Sampler);
    }

    [TestMethod]
    public void BadInput_IsRejectedNamingTheColumnOrSetting()
    {
        var big = _ml.Data.LoadFromEnumerable(new[] { new TestData.Image16 { Image = TestData.Gray(16, (_, _) => 0) } });
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.ImageToImage(_model, "Edited", "Image", Options(0.5f)).Fit(big));
        StringAssert.Contains(e.Message, "'Image'");
        StringAssert.Contains(e.Message, "16x16");
        StringAssert.Contains(e.Message, "8x8");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() =>
            _ml.Generative.ImageToImage(_model, "Edited", "Image", Options(0.5f)).GetOutputSchema(TestData.ShapeOf(big.Schema)));
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.ImageToImage(_model, "Edited", "Photo", Options(0.5f)).Fit(Rows(1)));
        StringAssert.Contains(e.Message, "'Photo'");
        StringAssert.Contains(e.Message, "not found");

        foreach (float bad in new[] { float.NaN, -0.5f, 1.5f })
        {
            var s = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.ImageToImage(_model, "Edited", "Image", bad));
            StringAssert.Contains(s.Message, "Strength");
            StringAssert.Contains(s.Message, "[0, 1]");
        }
        var steps = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.ImageToImage(_model, "Edited", "Image", Options(0.5f, steps: 51)));
        StringAssert.Contains(steps.Message, "Steps");
        var label = new ImageToImageOptions { LabelColumnName = "Label" };
        var l = Assert.ThrowsExactly<ArgumentException>(() => _ml.Generative.ImageToImage(_model, "Edited", "Image", label));
        StringAssert.Contains(l.Message, "LabelColumnName");
        var guided = Options(0.5f);
        guided.Sampler!.GuidanceScale = 3f;
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => _ml.Generative.ImageToImage(_model, "Edited", "Image", guided)).Message, "GuidanceScale");
    }

    /// <summary>A class-conditional model translates each row towards its label: at strength 1 the output is Generate(labels).</summary>
    [TestMethod]
    public void LabelColumn_ConditionsEachRow()
    {
        using var conditional = TestModel.Train("diffusion-sdedit-cfg", steps: 2, o =>
        {
            o.LabelColumnName = "Label";
            o.NumClasses = 25;
        });
        var rows = TestData.Squares(3, seed: 9).ToList();
        var data = conditional.Ml.Data.LoadFromEnumerable(rows);
        var options = Options(1f, steps: 4);
        options.Sampler!.GuidanceScale = 2f;
        options.LabelColumnName = "Label";
        var edited = conditional.Ml.Generative.ImageToImage(conditional.Model, "Edited", "Image", options).Fit(data).Transform(data)
            .GetColumn<MLImage>("Edited").Select(TestData.Pixels).ToList();
        var generated = conditional.Model.Generate(rows.Select(r => (int)r.Label).ToList(), options.Sampler).Select(TestData.Pixels).ToList();
        for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(generated[i], edited[i], $"row {i} (label {rows[i].Label})");
        var missing = new ImageToImageOptions { LabelColumnName = "Class" };
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => conditional.Ml.Generative.ImageToImage(conditional.Model, "Edited", "Image", missing).Fit(data));
        StringAssert.Contains(e.Message, "'Class'");
    }
}
