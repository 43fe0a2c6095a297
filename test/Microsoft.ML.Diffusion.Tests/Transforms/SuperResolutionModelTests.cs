using Microsoft.ML.Diffusion.Conditions;
using Microsoft.ML.Diffusion.Persistence;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Transforms;

/// <summary>A conditional super-resolution model (SR3, Saharia et al. 2021): the condition reaches the network, the
/// output depends on it, save/load keeps it, and wrong inputs fail clearly.</summary>
[TestClass]
public class SuperResolutionModelTests
{
    private static TestModel _fixture = null!;
    private static MLContext _ml => _fixture.Ml;
    private static IDataView _data => _fixture.Data;
    private static DiffusionModel _model => _fixture.Model;
    private static string _dir => _fixture.Directory;

    [ClassInitialize]
    public static void Fit(TestContext _) => _fixture = TestModel.Train("diffusion-sr", steps: 4, o => o.Conditioning = Conditioning.LowResolution(2));

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    /// <summary>[n, 1, 4, 4] low-resolution images: the Squares images average-pooled by 2.</summary>
    private static Tensor LowResolution(int n, int seed)
    {
        var pixels = new float[n * 64];
        int i = 0;
        foreach (var row in TestData.Squares(n, seed))
            Microsoft.ML.Diffusion.Imaging.ImageTensorConverter.ToChw(row.Image, 1, pixels.AsSpan(64 * i++, 64));
        using var full = tensor(pixels, new long[] { n, 1, 8, 8 });
        return LowResolutionCondition.Downsample(full, 2);
    }

    private static readonly SamplerOptions[] Samplers =
    {
        new() { Sampler = SamplerKind.Ddim, Steps = 4, Seed = 2 },
        new() { Sampler = SamplerKind.Ddpm, Steps = 3, Seed = 2 },
        new() { Sampler = SamplerKind.DpmSolverPlusPlus, Steps = 4, Seed = 2 },
    };

    private static float[] Values(Tensor t) => t.data<float>().ToArray();

    [TestMethod]
    public void TheNetworkGetsTheConditionAsExtraChannels()
    {
        Assert.AreEqual(Conditioning.LowResolution(2), _model.Conditioning);
        Assert.AreEqual(2, _model.Config.Network.InChannels, "x_t and the upsampled low-resolution image");
        Assert.AreEqual(1, _model.Config.Network.OutChannels);

        var options = TestData.TinyOptions();
        options.Conditioning = Conditioning.LowResolution(4);
        options.SelfConditioning = true;
        options.Channels = 3;
        Assert.AreEqual(9, options.ToNetworkConfig().InChannels, "x_t, x0_hat and the condition, 3 channels each");
    }

    [TestMethod]
    public void TheConditionChangesTheOutput()
    {
        using var a = LowResolution(3, seed: 1);
        using var b = LowResolution(3, seed: 2);
        var seeds = new uint[] { 5, 6, 7 };
        foreach (var options in Samplers)
        {
            using var outA = _model.SampleSuperResolution(a, seeds, options);
            using var outA2 = _model.SampleSuperResolution(a, seeds, options);
            using var outB = _model.SampleSuperResolution(b, seeds, options);
            CollectionAssert.AreEqual(new long[] { 3, 1, 8, 8 }, outA.shape);
            CollectionAssert.AreEqual(Values(outA), Values(outA2), $"{options.Sampler}: deterministic for the same input and seeds");
            double diff = (outA - outB).abs().max().item<float>();
            Assert.IsTrue(diff > 1e-4, $"{options.Sampler}: another low-resolution image gives another result (max diff {diff})");
            Assert.IsTrue(Values(outA).All(v => v >= -1 && v <= 1));
        }
    }

    [TestMethod]
    public void ImagesDoNotDependOnTheBatch()
    {
        using var low = LowResolution(5, seed: 3);
        var seeds = new uint[] { 1, 2, 3, 4, 5 };
        var one = new SamplerOptions { Sampler = SamplerKind.Ddpm, Steps = 3, BatchSize = 1 };
        var three = new SamplerOptions { Sampler = SamplerKind.Ddpm, Steps = 3, BatchSize = 3 };
        using var a = _model.SampleSuperResolution(low, seeds, one);
        using var b = _model.SampleSuperResolution(low, seeds, three);
        // Equal up to float rounding (kernels may sum in another order for another batch size); 1e-5 is far below 1/255.
        double diff = (a - b).abs().max().item<float>();
        Assert.IsTrue(diff < 1e-5, $"max diff {diff}");
    }

    [TestMethod]
    public void SaveAndLoadGiveIdenticalUpscales()
    {
        string path = Path.Combine(_dir, "sr.zip");
        _ml.Model.Save(_model, _data.Schema, path);
        using var loaded = (DiffusionModel)new MLContext().Model.Load(path, out _);
        Assert.AreEqual(Conditioning.LowResolution(2), loaded.Conditioning);
        using var low = LowResolution(2, seed: 4);
        var seeds = new uint[] { 8, 9 };
        foreach (var options in Samplers)
        {
            using var before = _model.SampleSuperResolution(low, seeds, options);
            using var after = loaded.SampleSuperResolution(low, seeds, options);
            CollectionAssert.AreEqual(Values(before), Values(after), options.Sampler.ToString());
        }
    }

    [TestMethod]
    public void WrongSizesAreRejected()
    {
        var seeds = new uint[] { 1, 2 };
        using var full = zeros(2, 1, 8, 8);
        var e = Assert.ThrowsExactly<ArgumentException>(() => _model.SampleSuperResolution(full, seeds, null));
        StringAssert.Contains(e.Message, "[2, 1, 8, 8]");
        StringAssert.Contains(e.Message, "[N, 1, 4, 4]");
        using var rgb = zeros(2, 3, 4, 4);
        Assert.ThrowsExactly<ArgumentException>(() => _model.SampleSuperResolution(rgb, seeds, null));
        using var three = zeros(3, 1, 4, 4);
        var e3 = Assert.ThrowsExactly<ArgumentException>(() => _model.SampleSuperResolution(three, seeds, null));
        StringAssert.Contains(e3.Message, "N = 2");
        using var flat = zeros(2, 16);
        Assert.ThrowsExactly<ArgumentException>(() => _model.SampleSuperResolution(flat, seeds, null));
    }

    [TestMethod]
    public void PlainGenerationFailsWithAPointerToUpscale()
    {
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => _model.Generate(1));
        StringAssert.Contains(e.Message, "low-resolution");
        StringAssert.Contains(e.Message, "Upscale");
        Assert.ThrowsExactly<InvalidOperationException>(() => _model.Transform(_ml.Generative.CreateRequests(1)));
        Assert.ThrowsExactly<InvalidOperationException>(() => _model.Interpolate(1, 2, 2));
    }

    [TestMethod]
    public void AnUnconditionalModelHasNoLowResolutionInput()
    {
        var options = TestData.TinyOptions(steps: 1);
        using var plain = _ml.Generative.Diffusion(options).Fit(_data);
        Assert.IsNull(plain.Conditioning);
        using var low = LowResolution(1, seed: 0);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => plain.SampleSuperResolution(low, new uint[] { 0 }, null));
        StringAssert.Contains(e.Message, "Conditioning.LowResolution");
    }

    [TestMethod]
    public void AnUnconditionalCheckpointIsNotResumedBySuperResolutionTraining()
    {
        string dir = Path.Combine(_dir, "ckpt");
        var plain = TestData.TinyOptions(steps: 1);
        plain.CheckpointDirectory = dir;
        _ml.Generative.Diffusion(plain).Fit(_data).Dispose();
        var sr = TestData.TinyOptions(steps: 2);
        sr.CheckpointDirectory = dir;
        sr.Conditioning = Conditioning.LowResolution(2);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => _ml.Generative.Diffusion(sr).Fit(_data));
        StringAssert.Contains(e.Message, "other training options");
    }

    [TestMethod]
    public void ConfigsWithoutConditioningReadAsUnconditional()
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(_model.Config.ToJson())!.AsObject();
        Assert.IsTrue(node.ContainsKey("Conditioning"));
        node.Remove("Conditioning");
        Assert.IsNull(DiffusionModelConfig.FromJson(node.ToJsonString()).Conditioning);
        Assert.AreEqual(Conditioning.LowResolution(2), DiffusionModelConfig.FromJson(_model.Config.ToJson()).Conditioning);
    }

    [TestMethod]
    public void TheBundledModelStillLoadsAsUnconditional()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null && !File.Exists(Path.Combine(dir.FullName, "Diffusion.MLNet.sln"))) dir = dir.Parent;
        Assert.IsNotNull(dir);
        string path = Path.Combine(dir.FullName, "src", "Samples", "Models", "fashion-mnist-ddpm.zip");
        using var bundled = (DiffusionModel)new MLContext().Model.Load(path, out _);
        Assert.IsNull(bundled.Conditioning);
        Assert.AreEqual(1, bundled.Config.Network.InChannels);
    }
}
