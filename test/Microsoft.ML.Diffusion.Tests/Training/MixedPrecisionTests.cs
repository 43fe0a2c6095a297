using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Training;

/// <summary>bfloat16 mixed precision: float32 master weights, training that converges like float32, sampling close to float32.</summary>
[TestClass]
public class MixedPrecisionTests
{
    private static readonly UNetConfig Tiny = new()
    {
        ImageSize = 8, BaseChannels = 8, ChannelMultipliers = new[] { 1, 2 }, AttentionResolutions = new[] { 4 },
        NumResBlocks = 1, GroupNormGroups = 4,
    };

    /// <summary>Losses of <paramref name="steps"/> steps on the Squares batch; the same seeds draw the same t and eps in both precisions.</summary>
    private static float[] Losses(Precision precision, int steps, Action<DiffusionTrainingLoop>? after = null)
    {
        manual_seed(7);
        using var model = new UNet(Tiny);
        using var ema = new UNet(Tiny);
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 50);
        using var loop = new DiffusionTrainingLoop(model, ema, schedule,
            new TrainingSettings { Seed = 3, LearningRate = 2e-3, Precision = precision }, CPU);
        using var x0 = TestData.SquaresTensor(8);
        var losses = Enumerable.Range(0, steps).Select(_ => loop.TrainStep(x0)).ToArray();
        after?.Invoke(loop);
        return losses;
    }

    [TestMethod]
    public void Bf16MixedTrainingReducesTheLossLikeFp32()
    {
        // Few steps: under the opt-in AVX2 limit (see TorchRuntime) or on CPUs without AVX-512 BF16, bfloat16 runs on slow reference kernels.
        const int steps = 12, window = 3;
        var fp32 = Losses(Precision.Fp32, steps);
        var bf16 = Losses(Precision.Bf16Mixed, steps);
        Console.WriteLine("fp32: " + string.Join(" ", fp32.Select(l => l.ToString("F3"))));
        Console.WriteLine("bf16: " + string.Join(" ", bf16.Select(l => l.ToString("F3"))));
        // Means over the first and last steps: single losses swing with the random timesteps.
        double first32 = fp32.Take(window).Average(), last32 = fp32.Skip(steps - window).Average();
        double first16 = bf16.Take(window).Average(), last16 = bf16.Skip(steps - window).Average();
        // Step 1 sees identical weights and draws and a zero-initialised output layer: both losses are mean(eps^2). From step 2 on
        // the bfloat16 forward differs by rounding only (8-bit mantissa, relative step 2^-8 = 0.4%, over ~20 layers: a few %).
        Assert.AreEqual(fp32[0], bf16[0], "step 1: the output layer starts at zero in both");
        Assert.AreEqual(fp32[1], bf16[1], 0.05 * fp32[1], "step-2 loss");
        Assert.IsTrue(fp32.Zip(bf16).Skip(1).Any(p => p.First != p.Second), "the bfloat16 copy is used (losses are not bit-identical to float32)");
        // Same seeds, same draws: the losses fall (over these 12 steps in float32) and bf16 follows fp32 step by step.
        Assert.IsTrue(last32 < 0.9 * first32, $"fp32 learns: {first32:G4} -> {last32:G4}");
        Assert.IsTrue(last16 < 0.9 * first16, $"bf16 learns: {first16:G4} -> {last16:G4}");
        for (int i = 0; i < steps; i++)
            Assert.AreEqual(fp32[i], bf16[i], 0.05 * fp32[i], $"step {i + 1}: bf16 loss {bf16[i]:G4} vs fp32 {fp32[i]:G4}");
    }

    [TestMethod]
    public void MasterWeightsEmaAndGradientsStayFloat32()
    {
        bool checkedLoop = false;
        Losses(Precision.Bf16Mixed, 3, loop =>
        {
            foreach (var p in loop.Model.parameters())
            {
                Assert.AreEqual(ScalarType.Float32, p.dtype, "master weight");
                if (p.grad is Tensor g) Assert.AreEqual(ScalarType.Float32, g.dtype, "master gradient");
            }
            foreach (var p in loop.Ema.Shadow.parameters()) Assert.AreEqual(ScalarType.Float32, p.dtype, "EMA weight");
            // AdamW's updates (lr 2e-3 times ~1) are far below bfloat16's spacing near 1 (2^-7): master weights that kept only
            // bfloat16 precision would equal their bfloat16 rounding; float32 masters do not.
            using var w = loop.Model.parameters().First(p => p.numel() > 100).detach().clone();
            using var rounded = w.to(bfloat16).to(float32);
            Assert.IsTrue((w - rounded).abs().max().item<float>() > 0, "the master weights hold more than bfloat16 precision");
            checkedLoop = true;
        });
        Assert.IsTrue(checkedLoop);
    }

    [TestMethod]
    public void Bf16SamplingIsCloseToFp32()
    {
        var ml = new MLContext(seed: 1);
        var options = TestData.TinyOptions(steps: 20);
        using var model = ml.Generative.Diffusion(options).Fit(ml.Data.LoadFromEnumerable(TestData.Squares(32).ToList()));
        var seeds = new uint[] { 1, 2, 3, 4 };
        var sampler = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 5 };
        using var fp32 = model.GenerateTensor(seeds, sampler);
        using var bf16 = model.GenerateTensor(seeds, new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 5, Precision = Precision.Bf16Mixed });
        Assert.AreEqual(ScalarType.Float32, bf16.dtype);
        using var diff = (fp32 - bf16).abs();
        double mean = diff.mean().item<float>(), max = diff.max().item<float>();
        // bfloat16 rounds each layer's output to 2^-9 relative; over a 5-step deterministic DDIM chain the images (range 2,
        // 255 grey levels) move by about a grey level on average. Tolerance: mean 0.02 (2.5 grey levels), max 0.25.
        Assert.IsTrue(mean > 0, "bfloat16 sampling is really used (not bit-identical to float32)");
        Assert.IsTrue(mean < 0.02, $"mean |fp32 - bf16| = {mean:G4}");
        Assert.IsTrue(max < 0.25, $"max |fp32 - bf16| = {max:G4}");
        // Still deterministic: the same request gives the same bfloat16 images.
        using var again = model.GenerateTensor(seeds, new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 5, Precision = Precision.Bf16Mixed });
        Assert.IsTrue(bf16.allclose(again, rtol: 0, atol: 0), "bf16 sampling is reproducible");
        Console.WriteLine($"mean |fp32 - bf16| = {mean:G4}, max = {max:G4}");
    }

    [TestMethod]
    public void SamplerPrecisionIsSavedOnlyWhenNotFp32()
    {
        string fp32 = System.Text.Json.JsonSerializer.Serialize(new SamplerOptions().ToSettings(), DiffusionModelConfig.Json);
        StringAssert.DoesNotMatch(fp32, new System.Text.RegularExpressions.Regex("Precision"), "float32 configs are written as before");
        var bf16 = (new SamplerOptions { Precision = Precision.Bf16Mixed }).ToSettings();
        string json = System.Text.Json.JsonSerializer.Serialize(bf16, DiffusionModelConfig.Json);
        StringAssert.Contains(json, "\"Precision\":\"Bf16Mixed\"");
        var back = System.Text.Json.JsonSerializer.Deserialize<SamplerSettings>(json, DiffusionModelConfig.Json)!;
        Assert.AreEqual(Precision.Bf16Mixed, back.ToOptions().Precision);
        var old = System.Text.Json.JsonSerializer.Deserialize<SamplerSettings>("{\"Sampler\":\"Ddim\",\"Steps\":5}", DiffusionModelConfig.Json)!;
        Assert.AreEqual(Precision.Fp32, old.ToOptions().Precision, "configs saved before Precision existed read as Fp32");
    }

    [TestMethod]
    public void ResumingAnFp32CheckpointInBf16FailsClearly()
    {
        string dir = Path.Combine(Path.GetTempPath(), "diffusion-ckpt-" + Guid.NewGuid().ToString("N"));
        try
        {
            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(TestData.Squares(16).ToList());
            var first = TestData.TinyOptions(steps: 2);
            first.CheckpointDirectory = dir;
            ml.Generative.Diffusion(first).Fit(data).Dispose();
            var other = TestData.TinyOptions(steps: 4);
            other.CheckpointDirectory = dir;
            other.Precision = Precision.Bf16Mixed;
            var e = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Generative.Diffusion(other).Fit(data));
            StringAssert.Contains(e.Message, "Bf16Mixed");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void UnknownPrecisionIsRejected()
    {
        var o = TestData.TinyOptions();
        o.Precision = (Precision)7;
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new MLContext().Generative.Diffusion(o));
        StringAssert.Contains(e.Message, "Precision");
        var s = new SamplerOptions { Precision = (Precision)7 };
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => s.Validate(50));
    }
}
