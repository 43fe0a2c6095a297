using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion.Tests.Transforms;

/// <summary>A self-conditioned model (Analog Bits, Chen et al. 2022) fits, saves and loads, and its images do not depend on the batching.</summary>
[TestClass]
public class SelfConditioningModelTests
{
    private static TestModel _fixture = null!;
    private static MLContext _ml => _fixture.Ml;
    private static IDataView _data => _fixture.Data;
    private static DiffusionModel _model => _fixture.Model;
    private static string _dir => _fixture.Directory;

    [ClassInitialize]
    public static void Fit(TestContext _) => _fixture = TestModel.Train("diffusion-selfcond", steps: 6, o => o.SelfConditioning = true);

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    private static List<byte[]> Pixels(IEnumerable<MLImage> images) => images.Select(TestData.Pixels).ToList();

    private static readonly SamplerOptions[] Samplers =
    {
        new() { Sampler = SamplerKind.Ddim, Steps = 5, Seed = 2 },
        new() { Sampler = SamplerKind.DpmSolverPlusPlus, Steps = 5, Seed = 2 },
        new() { Sampler = SamplerKind.Ddpm, Steps = 4, Seed = 2 },
    };

    [TestMethod]
    public void SelfConditionedModelSavesAndLoads()
    {
        Assert.IsTrue(_model.Config.SelfConditioning);
        Assert.AreEqual(2, _model.Config.Network.InChannels);
        string path = Path.Combine(_dir, "sc.zip");
        _ml.Model.Save(_model, _data.Schema, path);
        using var loaded = (DiffusionModel)new MLContext().Model.Load(path, out _);
        Assert.IsTrue(loaded.Config.SelfConditioning);
        Assert.AreEqual(2, loaded.Config.Network.InChannels);
        foreach (var options in Samplers)
        {
            var before = Pixels(_model.Generate(3, options));
            var after = Pixels(loaded.Generate(3, options));
            for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(before[i], after[i], $"{options.Sampler}, image {i}");
        }
    }

    [TestMethod]
    public void ImagesDoNotDependOnTheSamplerBatchSize()
    {
        foreach (var options in Samplers)
        {
            var one = options.Clone();
            one.BatchSize = 1;
            var four = options.Clone();
            four.BatchSize = 4;
            var a = Pixels(_model.Generate(5, one));
            var b = Pixels(_model.Generate(5, four));
            for (int i = 0; i < 5; i++) CollectionAssert.AreEqual(a[i], b[i], $"{options.Sampler}, image {i}");
        }
    }

    [TestMethod]
    public void TransformAndInterpolateMatchGenerate()
    {
        var options = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 5, Seed = 9, BatchSize = 2 };
        using var m = _model.WithSampler(options);
        var requests = _ml.Generative.CreateRequests(3, 9);
        var viaTransform = m.Transform(requests).GetColumn<MLImage>(m.OutputColumnName).Select(TestData.Pixels).ToList();
        var viaGenerate = Pixels(_model.Generate(3, options));
        for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(viaGenerate[i], viaTransform[i], $"image {i}");

        var path = Pixels(_model.Interpolate(9, 10, 3, options));
        CollectionAssert.AreEqual(viaGenerate[0], path[0], "the first end point is seed 9's image");
        CollectionAssert.AreEqual(viaGenerate[1], path[2], "the last end point is seed 10's image");
    }
}
