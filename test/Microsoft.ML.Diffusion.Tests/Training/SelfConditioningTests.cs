using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Training;
using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Conditions;

namespace Microsoft.ML.Diffusion.Tests.Training;

/// <summary>Self-conditioning (Chen, Zhang &amp; Hinton 2022, "Analog Bits"): network shape, config, training loop and the sampling denoiser.</summary>
[TestClass]
public class SelfConditioningTests
{
    private static readonly UNetConfig Tiny = new()
    {
        ImageSize = 8, InChannels = 2, BaseChannels = 8, ChannelMultipliers = new[] { 1, 2 }, AttentionResolutions = new[] { 4 },
        NumResBlocks = 1, GroupNormGroups = 4,
    };

    [TestMethod]
    public void ToNetworkConfigDoublesTheInputChannels()
    {
        var o = TestData.TinyOptions();
        Assert.IsFalse(o.SelfConditioning, "off by default");
        Assert.AreEqual(1, o.ToNetworkConfig().InChannels);
        o.SelfConditioning = true;
        Assert.AreEqual(2, o.ToNetworkConfig().InChannels);
        Assert.AreEqual(1, o.ToNetworkConfig().OutChannels);
        o.Channels = 3;
        o.Variance = VarianceType.Learned;
        Assert.AreEqual(6, o.ToNetworkConfig().InChannels);
        Assert.AreEqual(6, o.ToNetworkConfig().OutChannels);
    }

    [TestMethod]
    public void ConfigJsonRoundTripsAndOldJsonReadsFalse()
    {
        var config = new DiffusionModelConfig { Network = Tiny, ImageSize = 8, SelfConditioning = true };
        var back = DiffusionModelConfig.FromJson(config.ToJson());
        Assert.IsTrue(back.SelfConditioning);
        Assert.AreEqual(2, back.Network.InChannels);

        string json = (config with { SelfConditioning = false }).ToJson();
        StringAssert.Contains(json, "\"SelfConditioning\":false");
        string old = json.Replace(",\"SelfConditioning\":false", string.Empty);
        Assert.IsFalse(old.Contains("SelfConditioning"), "the old JSON lacks the field");
        Assert.IsFalse(DiffusionModelConfig.FromJson(old).SelfConditioning);
    }

    private static double EvalLoss(UNet model, DiffusionSchedule schedule, Tensor x0)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        model.eval();
        var g = new TorchSharp.torch.Generator(123, CPU);
        double total = 0;
        for (int k = 0; k < 4; k++)
        {
            var t = randint(0, schedule.Timesteps, new long[] { x0.shape[0] }, dtype: int64, generator: g);
            var eps = randn(x0.shape, generator: g);
            var xt = schedule.AddNoise(x0, eps, t);
            total += nn.functional.mse_loss(model.forward(SelfConditioning.Input(xt, null), t), eps).item<float>();
        }

        return total / 4;
    }

    private static List<float> Train(DiffusionSchedule schedule, Tensor x0, Func<UNet, double>? before, out double beforeLoss, out double afterLoss)
    {
        manual_seed(7);
        using var model = new UNet(Tiny);
        using var ema = new UNet(Tiny);
        using var loop = new DiffusionTrainingLoop(model, ema, schedule,
            new TrainingSettings { LearningRate = 2e-3, Seed = 5, SelfConditioning = true }, CPU);
        beforeLoss = before?.Invoke(model) ?? double.NaN;
        var losses = new List<float>();
        for (int i = 0; i < 20; i++) losses.Add(loop.TrainStep(x0));
        afterLoss = before?.Invoke(model) ?? double.NaN;
        return losses;
    }

    [TestMethod]
    public void TrainingLoopWithSelfConditioningLowersTheLossAndIsDeterministic()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 50);
        using var x0 = TestData.SquaresTensor(8);
        var a = Train(schedule, x0, m => EvalLoss(m, schedule, x0), out double before, out double after);
        Assert.IsTrue(a.All(float.IsFinite), "finite losses");
        Assert.IsLessThan(0.8 * before, after, $"loss on fixed (t, eps) from {before:G4} to {after:G4}; training losses {string.Join(", ", a.Select(l => l.ToString("G3")))}");
        var b = Train(schedule, x0, null, out _, out _);
        CollectionAssert.AreEqual(a, b, "same seed, same losses");
    }

    [TestMethod]
    public void EstimateX0UsesThePredictionHalfAndClamps()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 50);
        using var xt = randn(2, 1, 8, 8) * 3;
        using var eps = randn(2, 1, 8, 8);
        using var junk = full(new long[] { 2, 1, 8, 8 }, 100f);
        using var output = cat(new[] { eps, junk }, 1);
        using var t = tensor(new long[] { 3, 40 });
        using var x0 = SelfConditioning.EstimateX0(schedule, PredictionType.Epsilon, output, xt, t);
        Assert.IsFalse(x0.requires_grad);
        Assert.IsLessThanOrEqualTo(1f, x0.abs().max().item<float>());
        for (int i = 0; i < 2; i++)
        {
            int step = i == 0 ? 3 : 40;
            using var row = xt.narrow(0, i, 1);
            using var e = eps.narrow(0, i, 1);
            var (exp, _) = SchedulerCore.ToX0AndEps(e, row, schedule.AlphaBar(step), PredictionType.Epsilon);
            using var expected = SchedulerCore.ClampUnit(exp);
            exp.Dispose();
            using var got = x0.narrow(0, i, 1);
            Assert.IsTrue(got.allclose(expected, 1e-5, 1e-5), $"sample {i}");
        }
    }

    [TestMethod]
    public void DenoiserFeedsThePreviousStepsX0Estimate()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 50);
        var inputs = new List<Tensor>();
        var outputs = new List<Tensor>();
        var times = new List<int>();
        // A stand-in network: eps_hat = 0.5 x_t (the first channel of its input).
        Tensor Network(Tensor input, Tensor t)
        {
            inputs.Add(input.clone().DetachFromDisposeScope());
            times.Add((int)t[0].item<long>());
            var output = input.narrow(1, 0, 1) * 0.5f;
            outputs.Add(output.clone().DetachFromDisposeScope());
            return output;
        }

        var options = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 3 };
        var scheduler = SchedulerFactory.Create(schedule, options);
        try
        {
            using var denoiser = SelfConditioning.Denoiser(Network, schedule, PredictionType.Epsilon);
            using var images = DiffusionSampler.Sample(denoiser.Denoise, scheduler, new uint[] { 1, 2 }, new long[] { 1, 8, 8 }, CPU);
            Assert.HasCount(3, inputs);
            foreach (var input in inputs) CollectionAssert.AreEqual(new long[] { 2, 2, 8, 8 }, input.shape);
            Assert.AreEqual(0f, inputs[0].narrow(1, 1, 1).abs().max().item<float>(), "zeros at the first step");
            for (int k = 1; k < 3; k++)
            {
                using var xPrev = inputs[k - 1].narrow(1, 0, 1);
                var (est, _) = SchedulerCore.ToX0AndEps(outputs[k - 1], xPrev, schedule.AlphaBar(times[k - 1]), PredictionType.Epsilon);
                using var expected = SchedulerCore.ClampUnit(est);
                est.Dispose();
                using var cond = inputs[k].narrow(1, 1, 1);
                Assert.IsGreaterThan(0f, cond.abs().max().item<float>(), $"step {k}: non-zero conditioning");
                Assert.IsTrue(cond.allclose(expected, 1e-6, 1e-6), $"step {k}: the conditioning is step {k - 1}'s x0 estimate");
            }

            Assert.IsNotNull(denoiser.LastX0);
        }
        finally
        {
            (scheduler as IDisposable)?.Dispose();
            foreach (var x in inputs.Concat(outputs)) x.Dispose();
        }
    }
}
