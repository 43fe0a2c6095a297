using Microsoft.ML.Diffusion.Models;
using static Microsoft.ML.Diffusion.Tests.Onnx.UNetOnnxExportTests;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Onnx;

/// <summary>
/// <see cref="SamplerOptions.Engine"/> = <see cref="InferenceEngine.OnnxRuntime"/>: the same seeds and a deterministic sampler give
/// the images of <see cref="InferenceEngine.TorchSharp"/> (float32 rounding apart), the option survives WithSampler, and what the
/// ONNX export does not cover fails with a <see cref="NotSupportedException"/> that names it.
/// </summary>
[TestClass]
public class OnnxRuntimeEngineTests
{
    /// <summary>Max |x0_onnx - x0_torch| over images in [-1, 1]: one network call agrees within 1e-4, ten steps stay well under 1e-3.</summary>
    private const float TensorTolerance = 1e-3f;

    /// <summary>Max difference of 8-bit pixels (one grey level of rounding, one of slack).</summary>
    private const int PixelTolerance = 2;

    private static SamplerOptions Options(SamplerKind sampler, InferenceEngine engine, int batchSize = 64) =>
        new() { Sampler = sampler, Steps = 10, Seed = 11, Engine = engine, BatchSize = batchSize };

    private static float MaxDifference(Tensor a, Tensor b)
    {
        CollectionAssert.AreEqual(a.shape, b.shape);
        using var diff = (a - b).abs().max();
        return diff.item<float>();
    }

    [TestMethod]
    [DataRow(SamplerKind.Ddim)]
    [DataRow(SamplerKind.DpmSolverPlusPlus)]
    [DataRow(SamplerKind.Ddpm)]
    [DataRow(SamplerKind.EulerAncestral)]
    public void UnconditionalImagesMatchTorchSharp(SamplerKind sampler)
    {
        using var model = RandomModel(Tiny());
        var seeds = new uint[] { 3, 4, 5 };
        using var torchImages = model.GenerateTensor(seeds, Options(sampler, InferenceEngine.TorchSharp));
        using var onnxImages = model.GenerateTensor(seeds, Options(sampler, InferenceEngine.OnnxRuntime));
        Assert.IsTrue(torchImages.abs().max().item<float>() > 1e-2, "the images are near zero");
        float diff = MaxDifference(torchImages, onnxImages);
        Assert.IsTrue(diff <= TensorTolerance, $"{sampler}: max |onnx - torch| = {diff}");

        // Batches of 2 (a batch of 2 and one of 1) reuse the session and give the same images.
        using var rebatched = model.GenerateTensor(seeds, Options(sampler, InferenceEngine.OnnxRuntime, batchSize: 2));
        diff = MaxDifference(onnxImages, rebatched);
        Assert.IsTrue(diff <= TensorTolerance, $"{sampler}, batches of 2: max |onnx - onnx| = {diff}");
    }

    /// <summary>The bundled Fashion-MNIST model (28x28, base 32): identical 8-bit images up to rounding.</summary>
    [TestMethod]
    public void BundledModelImagesMatchTorchSharp()
    {
        string path = Path.Combine(Path.GetDirectoryName(Cli.CliBadInputTests.BundledModel)!, "fashion-mnist-ddpm.zip");
        using var model = new MLContext(seed: 1).Generative.LoadDiffusionModel(path);
        var torchImages = model.Generate(2, Options(SamplerKind.DpmSolverPlusPlus, InferenceEngine.TorchSharp));
        var onnxImages = model.Generate(2, Options(SamplerKind.DpmSolverPlusPlus, InferenceEngine.OnnxRuntime));
        for (int i = 0; i < 2; i++)
        {
            int diff = TestData.Pixels(torchImages[i]).Zip(TestData.Pixels(onnxImages[i]), (p, q) => Math.Abs(p - q)).Max();
            Assert.IsTrue(diff <= PixelTolerance, $"image {i}: max pixel difference {diff}");
        }
    }

    [TestMethod]
    public void EightBitImagesMatchTorchSharp()
    {
        using var model = RandomModel(Tiny(inCh: 3, outCh: 3));
        var torchImages = model.Generate(4, Options(SamplerKind.Ddim, InferenceEngine.TorchSharp));
        var onnxImages = model.Generate(4, Options(SamplerKind.Ddim, InferenceEngine.OnnxRuntime));
        for (int i = 0; i < 4; i++)
        {
            var a = TestData.Pixels(torchImages[i]);
            var b = TestData.Pixels(onnxImages[i]);
            int diff = a.Zip(b, (p, q) => Math.Abs(p - q)).Max();
            Assert.IsTrue(diff <= PixelTolerance, $"image {i}: max pixel difference {diff}");
        }
    }

    /// <summary>Class labels, the null label and classifier-free guidance (both branches in one call of twice the batch).</summary>
    [TestMethod]
    public void GuidedClassConditionalImagesMatchTorchSharp()
    {
        using var model = RandomModel(Tiny(numClasses: 3));
        var seeds = new uint[] { 1, 2, 3 };
        var labels = new[] { 0, 2, 1 };
        foreach (float guidance in new[] { 1f, 3f })
        {
            var torchOptions = Options(SamplerKind.DpmSolverPlusPlus, InferenceEngine.TorchSharp);
            var onnxOptions = Options(SamplerKind.DpmSolverPlusPlus, InferenceEngine.OnnxRuntime);
            torchOptions.GuidanceScale = onnxOptions.GuidanceScale = guidance;
            using var torchImages = model.GenerateTensor(seeds, labels, torchOptions);
            using var onnxImages = model.GenerateTensor(seeds, labels, onnxOptions);
            float diff = MaxDifference(torchImages, onnxImages);
            Assert.IsTrue(diff <= TensorTolerance, $"guidance {guidance}: max |onnx - torch| = {diff}");
        }
        // No labels: the null label.
        using var torchNull = model.GenerateTensor(seeds, Options(SamplerKind.Ddim, InferenceEngine.TorchSharp));
        using var onnxNull = model.GenerateTensor(seeds, Options(SamplerKind.Ddim, InferenceEngine.OnnxRuntime));
        Assert.IsTrue(MaxDifference(torchNull, onnxNull) <= TensorTolerance);
    }

    /// <summary>InferenceSession.Run is thread-safe: concurrent generations on one model share its session.</summary>
    [TestMethod]
    public void ConcurrentGenerationsShareTheSession()
    {
        using var model = RandomModel(Tiny());
        var options = Options(SamplerKind.Ddim, InferenceEngine.OnnxRuntime);
        using var expected = model.GenerateTensor(new uint[] { 7 }, options);
        var results = new Tensor[4];
        Parallel.For(0, results.Length, i => results[i] = model.GenerateTensor(new uint[] { 7 }, options));
        try
        {
            foreach (var r in results) Assert.AreEqual(0f, MaxDifference(expected, r));
        }
        finally
        {
            foreach (var r in results) r.Dispose();
        }
    }

    [TestMethod]
    public void EngineSurvivesWithSampler()
    {
        Assert.AreEqual(InferenceEngine.TorchSharp, new SamplerOptions().Engine);
        using var model = RandomModel(Tiny());
        var options = Options(SamplerKind.Ddim, InferenceEngine.OnnxRuntime);
        using var derived = model.WithSampler(options);
        Assert.AreEqual(InferenceEngine.OnnxRuntime, derived.DefaultSampler.Engine);
        Assert.AreEqual(InferenceEngine.OnnxRuntime, options.Clone().Engine);
        // The derived model's default sampler runs on ONNX Runtime (its own session) and gives the base model's ONNX images.
        using var fromDefault = derived.GenerateTensor(new uint[] { 11 });
        using var direct = model.GenerateTensor(new uint[] { 11 }, options);
        Assert.AreEqual(0f, MaxDifference(direct, fromDefault));
        // Disposing the derived model leaves the base model's network and session usable.
        derived.Dispose();
        using var again = model.GenerateTensor(new uint[] { 11 }, options);
        Assert.AreEqual(0f, MaxDifference(direct, again));
    }

    [TestMethod]
    public void SelfConditionedModelNamesTheFeature()
    {
        var net = Tiny(inCh: 2);
        using var model = new DiffusionModel(new MLContext(), new DiffusionModelConfig { Network = net, ImageSize = 8, SelfConditioning = true }, new UNet(net), CPU);
        var options = Options(SamplerKind.Ddim, InferenceEngine.OnnxRuntime);
        var error = Assert.ThrowsExactly<NotSupportedException>(() => model.GenerateTensor(new uint[] { 1 }, options));
        StringAssert.Contains(error.Message, "self-conditioned");
        StringAssert.Contains(error.Message, "InferenceEngine.TorchSharp");
        error = Assert.ThrowsExactly<NotSupportedException>(() => model.WithSampler(options));
        StringAssert.Contains(error.Message, "self-conditioned");
        // TorchSharp still samples it.
        using var images = model.GenerateTensor(new uint[] { 1 }, Options(SamplerKind.Ddim, InferenceEngine.TorchSharp));
    }

    [TestMethod]
    public void LatentModelNamesTheFeature()
    {
        var aeConfig = new AutoencoderConfig
        {
            ImageSize = 8, Channels = 1, LatentChannels = 2, DownsamplingFactor = 2, BaseChannels = 8, NumResBlocks = 1, GroupNormGroups = 4,
            ChannelMultipliers = AutoencoderConfig.DefaultMultipliers(2).ToArray(),
        };
        var ml = new MLContext();
        using var autoencoder = new AutoencoderModel(ml, new AutoencoderModelConfig { Network = aeConfig }, new KlAutoencoder(aeConfig), CPU);
        var net = Tiny(inCh: 2, outCh: 2) with { ImageSize = 4 };
        var config = new DiffusionModelConfig
        {
            Network = net, ImageSize = 8, Channels = 1, Latent = new LatentSpace { DownsamplingFactor = 2, LatentChannels = 2 },
        };
        using var model = new DiffusionModel(ml, config, new UNet(net), CPU, autoencoder: autoencoder);
        var options = Options(SamplerKind.Ddim, InferenceEngine.OnnxRuntime);
        var error = Assert.ThrowsExactly<NotSupportedException>(() => model.GenerateTensor(new uint[] { 1 }, options));
        StringAssert.Contains(error.Message, "latent diffusion model");
        StringAssert.Contains(error.Message, "InferenceEngine.TorchSharp");
        Assert.ThrowsExactly<NotSupportedException>(() => model.WithSampler(options));
    }

    [TestMethod]
    [DataRow(SamplerKind.EulerKarras)]
    [DataRow(SamplerKind.HeunKarras)]
    public void ContinuousTimestepSamplersNameTheLimit(SamplerKind sampler)
    {
        using var model = RandomModel(Tiny());
        int calls = 0;
        var progress = new Progress<SamplingProgress>(_ => calls++);
        var options = Options(sampler, InferenceEngine.OnnxRuntime);
        options.Progress = progress;
        var error = Assert.ThrowsExactly<NotSupportedException>(() => model.GenerateTensor(new uint[] { 1 }, options));
        StringAssert.Contains(error.Message, "int64");
        StringAssert.Contains(error.Message, sampler.ToString());
        Assert.AreEqual(0, calls, "the error comes before the first step");
    }

    [TestMethod]
    public void Bfloat16NamesTheLimit()
    {
        using var model = RandomModel(Tiny());
        var options = Options(SamplerKind.Ddim, InferenceEngine.OnnxRuntime);
        options.Precision = Precision.Bf16Mixed;
        var error = Assert.ThrowsExactly<NotSupportedException>(() => model.GenerateTensor(new uint[] { 1 }, options));
        StringAssert.Contains(error.Message, "Bf16Mixed");
    }
}
