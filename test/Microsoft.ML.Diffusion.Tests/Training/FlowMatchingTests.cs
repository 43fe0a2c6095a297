using Microsoft.ML.Diffusion.Sampling;
using System.IO.Compression;
using Microsoft.ML.Diffusion.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Training;

/// <summary>
/// The flow-matching objective (Lipman et al. 2023; Liu et al. 2023): its training batch against a float64 recomputation, a tiny
/// model that trains with finite loss and samples with both flow samplers, the objective saved with the model, and the errors of
/// options, samplers and features that do not apply.
/// </summary>
[TestClass]
public class FlowMatchingTests
{
    private static TestModel _fixture = null!;
    private static readonly List<float> Losses = new();

    [ClassInitialize]
    public static void Fit(TestContext _) => _fixture = TestModel.Train("flow-matching", steps: 3, o =>
    {
        o.Objective = DiffusionObjective.FlowMatching;
        o.Sampler = new SamplerOptions { Sampler = SamplerKind.FlowMatchEuler, Steps = 4, BatchSize = 16 };
        o.Progress = new SyncProgress<TrainingProgress>(p => Losses.Add(p.Loss));
    });

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }

    [TestMethod]
    public void TheBatchIsTheStraightPathAndItsVelocity()
    {
        using var x0 = TestData.SquaresTensor(3);
        using var g = new TorchSharp.torch.Generator(17);
        var (time, xt, v) = DiffusionTrainingLoop.FlowMatchingBatch(x0, 1000, 0.0, g);
        using (time) using (xt) using (v)
        {
            // The same stream drawn as defined: t ~ U[0, 1) per image (float64), then eps ~ N(0, I).
            using var reference = new TorchSharp.torch.Generator(17);
            using var t = rand(new long[] { 3 }, dtype: float64, generator: reference);
            using var eps = randn(x0.shape, dtype: float32, generator: reference).to_type(float64);
            using var x = x0.to_type(float64);
            using var tb = t.reshape(3, 1, 1, 1);
            using var expectedXt = (1 - tb) * x + tb * eps;                 // x_t = (1 - t) x_0 + t eps
            using var expectedV = eps - x;                                   // v = eps - x_0
            Assert.AreEqual(0.0, (xt.to_type(float64) - expectedXt).abs().max().item<double>(), 1e-6);
            Assert.AreEqual(0.0, (v.to_type(float64) - expectedV).abs().max().item<double>(), 1e-6);
            Assert.AreEqual(ScalarType.Float32, time.dtype, "the network's time input is a float");
            using var expectedTime = t * 1000;
            Assert.AreEqual(0.0, (time.to_type(float64) - expectedTime).abs().max().item<double>(), 1e-3);
        }
    }

    [TestMethod]
    public void ATinyModelTrainsWithFiniteLossAndSamplesWithBothSamplers()
    {
        Assert.HasCount(3, Losses);
        Assert.IsTrue(Losses.All(float.IsFinite), string.Join(", ", Losses));
        // At initialisation the network's output is near 0, so the loss is near E|eps - x_0|^2 = 1 + E x_0^2 (about 1.7 here).
        Assert.IsTrue(Losses[0] > 0.5 && Losses[0] < 5, $"first loss {Losses[0]}");
        var model = _fixture.Model;
        Assert.AreEqual(DiffusionObjective.FlowMatching, model.Objective);
        foreach (var kind in new[] { SamplerKind.FlowMatchEuler, SamplerKind.FlowMatchHeun })
        {
            using var images = model.GenerateTensor(new uint[] { 1, 2 }, new SamplerOptions { Sampler = kind, Steps = 3 });
            CollectionAssert.AreEqual(new long[] { 2, 1, 8, 8 }, images.shape);
            Assert.IsTrue(images.isfinite().all().item<bool>(), kind.ToString());
        }
        // Transform uses the saved default sampler (flow-matching Euler).
        Assert.HasCount(2, model.Generate(2));
    }

    [TestMethod]
    public void ClassifierFreeGuidanceAndInterpolationWork()
    {
        // Guidance mixes two velocity predictions linearly (v_uncond + w (v_cond - v_uncond)), as diffusers' SD3 pipeline does.
        using var conditional = TestModel.Train("flow-cfg", steps: 2, o =>
        {
            o.Objective = DiffusionObjective.FlowMatching;
            o.Sampler = new SamplerOptions { Sampler = SamplerKind.FlowMatchEuler, Steps = 3 };
            o.LabelColumnName = "Label";
            o.NumClasses = 25;
        });
        var seeds = new uint[] { 1, 2 };
        var labels = new[] { 3, 7 };
        using var plain = conditional.Model.GenerateTensor(seeds, labels, new SamplerOptions { Sampler = SamplerKind.FlowMatchEuler, Steps = 3 });
        using var guided = conditional.Model.GenerateTensor(seeds, labels, new SamplerOptions { Sampler = SamplerKind.FlowMatchEuler, Steps = 3, GuidanceScale = 3 });
        Assert.IsTrue(guided.isfinite().all().item<bool>());
        Assert.IsFalse(plain.equal(guided).all().item<bool>(), "the guidance scale changes the samples");

        // Interpolation needs a deterministic sampler: both flow samplers are; its ends are the seeds' own samples.
        var options = new SamplerOptions { Sampler = SamplerKind.FlowMatchHeun, Steps = 3 };
        var path = _fixture.Model.Interpolate(4, 9, 3, options);
        Assert.HasCount(3, path);
        CollectionAssert.AreEqual(TestData.Pixels(_fixture.Model.Generate(1, new SamplerOptions { Sampler = SamplerKind.FlowMatchHeun, Steps = 3, Seed = 9 })[0]),
            TestData.Pixels(path[2]));
    }

    [TestMethod]
    [DataRow(SamplerKind.FlowMatchEuler)]
    [DataRow(SamplerKind.FlowMatchHeun)]
    public void OnnxRuntimeGivesTorchSharpsSamples(SamplerKind kind)
    {
        // The exported U-Net takes the flow time sigma * T as a float (int64 where it is a whole number, as at sigma = 1).
        var seeds = new uint[] { 3, 4 };
        using var torchImages = _fixture.Model.GenerateTensor(seeds, new SamplerOptions { Sampler = kind, Steps = 4, Engine = InferenceEngine.TorchSharp });
        using var onnxImages = _fixture.Model.GenerateTensor(seeds, new SamplerOptions { Sampler = kind, Steps = 4, Engine = InferenceEngine.OnnxRuntime });
        using var diff = (torchImages - onnxImages).abs().max();
        Assert.IsLessThan(1e-3f, diff.item<float>(), kind.ToString());
    }

    [TestMethod]
    public void ImageToImageStartsOnThePath()
    {
        // SDEdit (Meng et al. 2022) on a flow model: noise the image to the start position's sigma, then integrate the rest.
        var model = _fixture.Model;
        using var images = TestData.SquaresTensor(2);
        var options = new SamplerOptions { Sampler = SamplerKind.FlowMatchEuler, Steps = 4 };
        using var edited = model.Pipeline.Run(new SamplingRequest(new uint[] { 1, 2 }, options) { InitialImages = images, StartStep = 2 });
        Assert.IsTrue(edited.isfinite().all().item<bool>());
        using var kept = model.Pipeline.Run(new SamplingRequest(new uint[] { 1, 2 }, options) { InitialImages = images, StartStep = 4 });
        Assert.IsTrue(kept.equal(images).all().item<bool>(), "strength 0: the image itself");
    }

    [TestMethod]
    public void SaveAndLoadGiveIdenticalSamples()
    {
        string path = Path.Combine(_fixture.Directory, "flow.zip");
        _fixture.Ml.Model.Save(_fixture.Model, _fixture.Data.Schema, path);
        using var loaded = (DiffusionModel)new MLContext().Model.Load(path, out _);
        Assert.AreEqual(DiffusionObjective.FlowMatching, loaded.Config.Objective);
        Assert.AreEqual(SamplerKind.FlowMatchEuler, loaded.DefaultSampler.Sampler);
        foreach (var kind in new[] { SamplerKind.FlowMatchEuler, SamplerKind.FlowMatchHeun })
        {
            var options = new SamplerOptions { Sampler = kind, Steps = 4, Seed = 3 };
            using var before = _fixture.Model.GenerateTensor(new uint[] { 5, 6 }, options);
            using var after = loaded.GenerateTensor(new uint[] { 5, 6 }, options);
            Assert.IsTrue(before.equal(after).all().item<bool>(), kind.ToString());
        }
        using var zip = ZipFile.OpenRead(path);
        using var stream = zip.Entries.Single(e => e.FullName.EndsWith("Model.key")).Open();
        var header = new byte[0x50];
        stream.ReadExactly(header);
        Assert.AreEqual(0x00010003u, BitConverter.ToUInt32(header, 0x48), "written as format 1.3: older releases refuse it");
    }

    [TestMethod]
    public void ASamplerOfTheOtherObjectiveIsRefusedNamingBoth()
    {
        var model = _fixture.Model;
        var e = Assert.ThrowsExactly<ArgumentException>(() => model.Generate(1, new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 3 }));
        StringAssert.Contains(e.Message, "Ddim");
        StringAssert.Contains(e.Message, "FlowMatching");
        e = Assert.ThrowsExactly<ArgumentException>(() => model.WithSampler(new SamplerOptions { Sampler = SamplerKind.Ddpm }));
        StringAssert.Contains(e.Message, "Ddpm");
        // And the other way round: a DDPM model and a flow sampler.
        using var ddpm = TestModel.Shared("flow-shared");
        e = Assert.ThrowsExactly<ArgumentException>(() => ddpm.Model.Generate(1, new SamplerOptions { Sampler = SamplerKind.FlowMatchEuler, Steps = 3 }));
        StringAssert.Contains(e.Message, "FlowMatchEuler");
        StringAssert.Contains(e.Message, "DiffusionObjective.Ddpm");
    }

    [TestMethod]
    public void InpaintingAndClassifierGuidanceAreNotSupported()
    {
        var ml = _fixture.Ml;
        var e = Assert.ThrowsExactly<NotSupportedException>(() => ml.Generative.Inpaint(_fixture.Model));
        StringAssert.Contains(e.Message, "RePaint inpainting");
        StringAssert.Contains(e.Message, "FlowMatching");
        e = Assert.ThrowsExactly<NotSupportedException>(() => ml.Generative.Upscale(_fixture.Model, "Upscaled", "Image", new UpscaleOptions { Factor = 2 }));
        StringAssert.Contains(e.Message, "Upscaling an unconditional model");
        var c = Assert.ThrowsExactly<NotSupportedException>(() => ml.Generative.NoisyClassifier(new NoisyClassifierTrainer.Options { DiffusionModel = _fixture.Model }));
        StringAssert.Contains(c.Message, "flow-matching");
    }

    [TestMethod]
    public void OptionsOfTheDdpmObjectiveAreRefusedNamingThem()
    {
        var ml = new MLContext(seed: 1);
        DiffusionTrainer.Options Flow(Action<DiffusionTrainer.Options> change)
        {
            var o = TestData.TinyOptions();
            o.Objective = DiffusionObjective.FlowMatching;
            o.Sampler = new SamplerOptions { Sampler = SamplerKind.FlowMatchHeun };
            change(o);
            return o;
        }

        Assert.IsNotNull(ml.Generative.Diffusion(Flow(_ => { })));
        var e = Assert.ThrowsExactly<ArgumentException>(() => ml.Generative.Diffusion(Flow(o => o.Sampler = new SamplerOptions())));
        StringAssert.Contains(e.Message, "Sampler");
        StringAssert.Contains(e.Message, "FlowMatchEuler");
        foreach (var (change, name) in new (Action<DiffusionTrainer.Options>, string)[]
        {
            (o => o.Prediction = PredictionType.VPrediction, "Prediction"),
            (o => o.Variance = VarianceType.Learned, "Variance"),
            (o => o.LossWeighting = LossWeighting.MinSnr, "LossWeighting"),
            (o => o.Schedule = NoiseSchedule.Cosine, "Schedule"),
            (o => o.SelfConditioning = true, "SelfConditioning"),
            (o => o.RescaleBetasZeroSnr = true, "RescaleBetasZeroSnr"),
        })
        {
            e = Assert.ThrowsExactly<ArgumentException>(() => ml.Generative.Diffusion(Flow(change)), name);
            StringAssert.Contains(e.Message, $"DiffusionTrainer.Options.{name}");
            StringAssert.Contains(e.Message, "FlowMatching");
        }
    }
}
