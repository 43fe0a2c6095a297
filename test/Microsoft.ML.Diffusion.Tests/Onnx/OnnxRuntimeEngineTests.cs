using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Conditions;
using Microsoft.ML.Diffusion.Models;
using static Microsoft.ML.Diffusion.Tests.Onnx.UNetOnnxExportTests;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Onnx;

/// <summary>
/// <see cref="SamplerOptions.Engine"/> = <see cref="InferenceEngine.OnnxRuntime"/>: the same seeds and sampler give the images of
/// <see cref="InferenceEngine.TorchSharp"/> (float32 rounding apart: max |x0_onnx - x0_torch| &lt;= 1e-3 on the [-1, 1] scale after 10
/// steps, or at most 2 grey levels of the 8-bit images) for every kind of model (unconditional, class-conditional with guidance,
/// self-conditioned, super-resolution, latent, classifier-guided) and sampler (continuous-time ones included); the option
/// survives WithSampler, and bfloat16 fails with a <see cref="NotSupportedException"/> that names it.
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

    /// <summary>The images of <paramref name="sampler"/> for three seeds, in batches of 2 and 1, agree between the engines.</summary>
    private static void AssertEnginesAgree(DiffusionModel model, SamplerKind sampler)
    {
        var seeds = new uint[] { 3, 4, 5 };
        using var torchImages = model.GenerateTensor(seeds, Options(sampler, InferenceEngine.TorchSharp, batchSize: 2));
        using var onnxImages = model.GenerateTensor(seeds, Options(sampler, InferenceEngine.OnnxRuntime, batchSize: 2));
        Assert.IsTrue(torchImages.abs().max().item<float>() > 1e-2, "the images are near zero");
        float diff = MaxDifference(torchImages, onnxImages);
        Console.WriteLine($"{sampler}: max |x0_onnx - x0_torch| = {diff:G3}");
        Assert.IsTrue(diff <= TensorTolerance, $"{sampler}: max |onnx - torch| = {diff}");
    }

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
        Console.WriteLine($"{sampler}: max |onnx - torch| = {diff}");
        Assert.IsTrue(diff <= TensorTolerance, $"{sampler}: max |onnx - torch| = {diff}");

        // Batches of 2 (a batch of 2 and one of 1) reuse the session and give the same images.
        using var rebatched = model.GenerateTensor(seeds, Options(sampler, InferenceEngine.OnnxRuntime, batchSize: 2));
        diff = MaxDifference(onnxImages, rebatched);
        Console.WriteLine($"{sampler}, batches of 2: max |onnx - onnx| = {diff}");
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
            Console.WriteLine($"guidance {guidance}: max |onnx - torch| = {diff}");
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

    /// <summary>Self-conditioning: x0_hat of the previous step reaches the graph's self_condition input (zeros at the first step).</summary>
    [TestMethod]
    [DataRow(SamplerKind.Ddim)]
    [DataRow(SamplerKind.DpmSolverPlusPlus)]
    public void SelfConditionedImagesMatchTorchSharp(SamplerKind sampler)
    {
        using var model = ConditionedModel(selfConditioning: true, factor: 0);
        AssertEnginesAgree(model, sampler);
    }

    /// <summary>A latent model: the U-Net on ONNX Runtime, then the decoder's ONNX graph decodes D(z / s).</summary>
    [TestMethod]
    public void LatentImagesMatchTorchSharp()
    {
        using var model = LatentModel(out var autoencoder);
        using (autoencoder)
        {
            AssertEnginesAgree(model, SamplerKind.Ddim);
            Assert.IsTrue(autoencoder.OnnxDecoderOpened, "the decoder ran on ONNX Runtime");
        }
    }

    /// <summary>The Karras-sigma samplers call the network at fractional timesteps, which the graph's float32 t takes.</summary>
    [TestMethod]
    [DataRow(SamplerKind.EulerKarras)]
    [DataRow(SamplerKind.HeunKarras)]
    public void ContinuousTimestepSamplersMatchTorchSharp(SamplerKind sampler)
    {
        using var model = RandomModel(Tiny(numClasses: 2));
        var seeds = new uint[] { 3, 4 };
        var labels = new[] { 1, 0 };
        var torchOptions = Options(sampler, InferenceEngine.TorchSharp);
        var onnxOptions = Options(sampler, InferenceEngine.OnnxRuntime);
        torchOptions.GuidanceScale = onnxOptions.GuidanceScale = 2f;
        torchOptions.Steps = onnxOptions.Steps = 6;
        using var torchImages = model.GenerateTensor(seeds, labels, torchOptions);
        using var onnxImages = model.GenerateTensor(seeds, labels, onnxOptions);
        float diff = MaxDifference(torchImages, onnxImages);
        Console.WriteLine($"{sampler}: max |onnx - torch| = {diff}");
        Assert.IsTrue(diff <= TensorTolerance, $"{sampler}: max |onnx - torch| = {diff}");
    }

    /// <summary>SR3 upscaling: the low-resolution image itself goes to the graph (bound once per batch, repeated once for a guided
    /// batch of 2B), alone and with self-conditioning and class labels.</summary>
    [TestMethod]
    [DataRow(false, 1f, SamplerKind.Ddim)]
    [DataRow(true, 2.5f, SamplerKind.EulerKarras)]
    public void SuperResolutionImagesMatchTorchSharp(bool selfConditioning, float guidance, SamplerKind sampler)
    {
        using var model = ConditionedModel(selfConditioning, factor: 2, numClasses: guidance == 1f ? 0 : 2);
        var seeds = new uint[] { 5, 6, 7 };
        var generator = new TorchSharp.torch.Generator(3);
        using var low = rand(new long[] { 3, 1, 4, 4 }, generator: generator) * 2 - 1;
        var torchOptions = Options(sampler, InferenceEngine.TorchSharp, batchSize: 2);
        var onnxOptions = Options(sampler, InferenceEngine.OnnxRuntime, batchSize: 2);
        torchOptions.Steps = onnxOptions.Steps = 6;
        Tensor torchImages, onnxImages;
        if (guidance == 1f)
        {
            torchImages = model.SampleSuperResolution(low, seeds, torchOptions);
            onnxImages = model.SampleSuperResolution(low, seeds, onnxOptions);
        }
        else
        {
            // Class labels with classifier-free guidance: the pipeline with both the condition and the labels.
            torchOptions.GuidanceScale = onnxOptions.GuidanceScale = guidance;
            var classes = new long[] { 0, 1, 1 };
            using var upsampled = LowResolutionCondition.Upsample(low, 8);
            torchImages = model.Pipeline.Run(new SamplingRequest(seeds, torchOptions) { ConditionChannels = upsampled, Classes = classes, LowResolution = low });
            onnxImages = model.Pipeline.Run(new SamplingRequest(seeds, onnxOptions) { ConditionChannels = upsampled, Classes = classes, LowResolution = low });
        }
        using (torchImages)
        using (onnxImages)
        {
            Assert.IsTrue(torchImages.abs().max().item<float>() > 1e-2, "the images are near zero");
            float diff = MaxDifference(torchImages, onnxImages);
            Console.WriteLine($"{sampler}: max |x0_onnx - x0_torch| = {diff:G3}");
            Assert.IsTrue(diff <= TensorTolerance, $"{sampler}: max |onnx - torch| = {diff}");
        }
    }

    /// <summary>Classifier guidance: the diffusion network runs on ONNX Runtime, the classifier's gradient on TorchSharp.</summary>
    [TestMethod]
    [DataRow(SamplerKind.Ddim)]
    [DataRow(SamplerKind.Ddpm)]
    public void ClassifierGuidedImagesMatchTorchSharp(SamplerKind sampler)
    {
        using var model = RandomModel(Tiny());
        // Random weights for a cosine schedule of T = 1000, the model's.
        using var classifier = NoisyClassifierOnnxExportTests.RandomClassifier(timesteps: model.Timesteps);
        var seeds = new uint[] { 1, 2 };
        var labels = new[] { 3, 0 };
        var torchOptions = Options(sampler, InferenceEngine.TorchSharp);
        var onnxOptions = Options(sampler, InferenceEngine.OnnxRuntime);
        var plain = Options(sampler, InferenceEngine.TorchSharp);
        foreach (var o in new[] { torchOptions, onnxOptions, plain })
            o.Steps = 5;
        foreach (var o in new[] { torchOptions, onnxOptions })
        {
            o.Classifier = classifier;
            o.ClassifierScale = 2f;
        }
        using var unguided = model.GenerateTensor(seeds, plain);
        using var torchImages = model.GenerateTensor(seeds, labels, torchOptions);
        using var onnxImages = model.GenerateTensor(seeds, labels, onnxOptions);
        Assert.IsTrue(MaxDifference(unguided, torchImages) > 1e-2, "the guidance changes the images");
        float diff = MaxDifference(torchImages, onnxImages);
        Console.WriteLine($"{sampler}: max |onnx - torch| = {diff}");
        Assert.IsTrue(diff <= TensorTolerance, $"{sampler}: max |onnx - torch| = {diff}");
    }

    /// <summary>The network call of the other loops (RePaint): the TorchSharp network's concatenated input concat(x_t, x0_hat) is
    /// split into the graph's two inputs; an image-conditioned graph refuses the concatenated form by name, and wrong condition
    /// inputs are named.</summary>
    [TestMethod]
    public void ConcatenatedSelfConditionInputIsSplit()
    {
        using var scope = NewDisposeScope();
        using var model = ConditionedModel(selfConditioning: true, factor: 0);
        var inputs = Inputs(model, 3);
        var network = model.Pipeline.OnnxNetwork();
        var separate = network.Forward(inputs.X, inputs.T, null, inputs.SelfCondition, null);
        var concatenated = network.Forward(cat(new[] { inputs.X, inputs.SelfCondition! }, 1), inputs.T, null);
        Assert.AreEqual(0f, (separate - concatenated).abs().max().item<float>());
        Assert.IsTrue(MaxDifference(TorchForward(model, inputs), separate) <= 1e-4f);

        using var sr = ConditionedModel(selfConditioning: false, factor: 2);
        var error = Assert.ThrowsExactly<ArgumentException>(() => sr.Pipeline.OnnxNetwork().Forward(randn(1, 2, 8, 8), tensor(new long[] { 5 }), null));
        StringAssert.Contains(error.Message, "low_resolution");
        error = Assert.ThrowsExactly<ArgumentException>(() => sr.Pipeline.OnnxNetwork().Forward(randn(2, 1, 8, 8), tensor(new long[] { 5, 6 }), null, null, randn(1, 1, 4, 4)));
        StringAssert.Contains(error.Message, "batch 1; x_t has 2");
        error = Assert.ThrowsExactly<ArgumentException>(() => sr.Pipeline.OnnxNetwork().Forward(randn(1, 1, 8, 8), tensor(new long[] { 5 }), null, randn(1, 1, 8, 8), randn(1, 1, 4, 4)));
        StringAssert.Contains(error.Message, "not self-conditioned");
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
