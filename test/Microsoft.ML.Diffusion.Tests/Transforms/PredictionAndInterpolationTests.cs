using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Persistence;

namespace Microsoft.ML.Diffusion.Tests.Transforms;

/// <summary>A v-prediction model trained with Min-SNR weights: save/load keeps its prediction type and images;
/// Interpolate slerps between two seeds' starting noises.</summary>
[TestClass]
public class PredictionAndInterpolationTests
{
    private static TestModel _fixture = null!;
    private static MLContext _ml => _fixture.Ml;
    private static IDataView _data => _fixture.Data;
    private static DiffusionModel _model => _fixture.Model;
    private static string _dir => _fixture.Directory;

    private static readonly SamplerOptions Deterministic = new() { Sampler = SamplerKind.Ddim, Steps = 5, Eta = 0f };

    [ClassInitialize]
    public static void Fit(TestContext _) => _fixture = TestModel.Train("diffusion-prediction", steps: 6, o =>
    {
        o.Prediction = PredictionType.VPrediction;
        o.LossWeighting = LossWeighting.MinSnr;
        o.Sampler = new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlus, Steps = 5, DynamicThresholding = true, BatchSize = 16 };
    });

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    private static List<byte[]> Pixels(IEnumerable<MLImage> images) => images.Select(TestData.Pixels).ToList();

    [TestMethod]
    public void VPredictionModelWithMinSnrSavesAndLoads()
    {
        Assert.AreEqual(PredictionType.VPrediction, _model.Config.Prediction);
        Assert.AreEqual(6L, _model.Config.TrainedSteps);
        string path = Path.Combine(_dir, "v.zip");
        _ml.Model.Save(_model, _data.Schema, path);
        using var loaded = (DiffusionModel)new MLContext().Model.Load(path, out _);
        Assert.AreEqual(PredictionType.VPrediction, loaded.Config.Prediction);
        Assert.IsTrue(loaded.DefaultSampler.DynamicThresholding, "the default sampler's dynamic thresholding is saved");

        foreach (var options in new[] { Deterministic, new SamplerOptions { Sampler = SamplerKind.Ddpm, Steps = 4, Seed = 3 }, loaded.DefaultSampler })
        {
            var before = Pixels(_model.Generate(3, options));
            var after = Pixels(loaded.Generate(3, options));
            for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(before[i], after[i], $"{options.Sampler}, image {i}");
        }

        // The saved prediction type reaches the sampler: the same weights read as epsilon give other images.
        using var asEpsilon = new DiffusionModel(new MLContext(), loaded.Config with { Prediction = PredictionType.Epsilon }, loaded.Network, loaded.Device, ownsNetwork: false);
        var v = Pixels(loaded.Generate(2, Deterministic));
        var e = Pixels(asEpsilon.Generate(2, Deterministic));
        Assert.IsFalse(v.Zip(e).All(p => p.First.SequenceEqual(p.Second)), "the prediction type changes sampling");
    }

    [TestMethod]
    public void ConfigWithoutPredictionReadsAsEpsilon()
    {
        string json = _model.Config.ToJson();
        var stripped = System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject();
        Assert.IsTrue(stripped.Remove("Prediction"));
        stripped["DefaultSampler"]!.AsObject().Remove("DynamicThresholding");
        var old = DiffusionModelConfig.FromJson(stripped.ToJsonString());
        Assert.AreEqual(PredictionType.Epsilon, old.Prediction);
        Assert.IsFalse(old.DefaultSampler.DynamicThresholding);
        Assert.AreEqual(PredictionType.VPrediction, DiffusionModelConfig.FromJson(json).Prediction);
    }

    [TestMethod]
    public void InterpolateEndsAtTheTwoSeedsImages()
    {
        foreach (var options in new[] { Deterministic, new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlus, Steps = 4, BatchSize = 2 } })
        {
            var images = _model.Interpolate(11, 42, 5, options);
            Assert.HasCount(5, images);
            var a = options.Clone();
            a.Seed = 11;
            var b = options.Clone();
            b.Seed = 42;
            CollectionAssert.AreEqual(TestData.Pixels(_model.Generate(1, a)[0]), TestData.Pixels(images[0]), $"{options.Sampler}: first image is seed A's");
            CollectionAssert.AreEqual(TestData.Pixels(_model.Generate(1, b)[0]), TestData.Pixels(images[4]), $"{options.Sampler}: last image is seed B's");
            Assert.IsFalse(TestData.Pixels(images[2]).SequenceEqual(TestData.Pixels(images[0])), "the middle differs from the ends");
        }
    }

    [TestMethod]
    public void SlerpKeepsTheNoiseNorm()
    {
        using var noise = DiffusionModel.SlerpNoise(1, 2, 3, new long[] { 1, 16, 16 });
        using var norms = noise.reshape(3, -1).norm(1);
        var n = norms.data<float>().ToArray();
        // Two independent 256-dim Gaussians are nearly orthogonal, so the slerp midpoint keeps about their norm (a lerp would shrink it by ~sqrt 2).
        Assert.AreEqual((n[0] + n[2]) / 2, n[1], 0.1 * n[1]);
    }

    [TestMethod]
    public void InterpolateRejectsSamplersThatNeedNoise()
    {
        var ddpm = new SamplerOptions { Sampler = SamplerKind.Ddpm, Steps = 4 };
        var e1 = Assert.ThrowsExactly<ArgumentException>(() => _model.Interpolate(1, 2, 3, ddpm));
        StringAssert.Contains(e1.Message, "deterministic");
        var ddimEta = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 4, Eta = 0.5f };
        Assert.ThrowsExactly<ArgumentException>(() => _model.Interpolate(1, 2, 3, ddimEta));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _model.Interpolate(1, 2, 1, Deterministic));
    }
}
