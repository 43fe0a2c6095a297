using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Tests.Schedules;
using Microsoft.ML.Diffusion.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Training;

/// <summary>Training targets (eps, x_0, v) and Min-SNR weights, checked against float64 formulas written here.</summary>
[TestClass]
public class DiffusionLossTests
{
    private static readonly PredictionType[] All = { PredictionType.Epsilon, PredictionType.Sample, PredictionType.VPrediction };

    [TestMethod]
    public void MinSnrWeightsFollowHangEtAl()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        var abars = ReferenceSchedules.AlphaBars(ReferenceSchedules.LinearBetas(1000));
        foreach (int t in new[] { 0, 50, 200, 500, 999 })
        {
            double snr = abars[t] / (1 - abars[t]);
            double clamped = Math.Min(snr, 5.0);
            var expected = new Dictionary<PredictionType, double>
            {
                [PredictionType.Epsilon] = clamped / snr,
                [PredictionType.Sample] = clamped,
                [PredictionType.VPrediction] = clamped / (snr + 1),
            };
            foreach (var p in All)
            {
                var weights = DiffusionLoss.TimestepWeights(schedule, LossWeighting.MinSnr, p);
                Assert.AreEqual(expected[p], weights[t], 1e-9 * Math.Max(1, expected[p]), $"{p} at t = {t}");
                Assert.AreEqual(1.0, DiffusionLoss.TimestepWeights(schedule, LossWeighting.None, p)[t]);
            }
        }

        // Low noise (SNR > 5) is down-weighted for epsilon; high noise keeps weight 1.
        Assert.IsLessThan(1.0, DiffusionLoss.MinSnrWeight(abars[0], PredictionType.Epsilon));
        Assert.AreEqual(1.0, DiffusionLoss.MinSnrWeight(abars[999], PredictionType.Epsilon), 1e-12);
    }

    [TestMethod]
    public void TargetsAreEpsX0AndV()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Cosine, 100);
        var abars = ReferenceSchedules.AlphaBars(ReferenceSchedules.CosineBetas(100));
        using var gen = new Generator(4);
        using var x0 = randn(new long[] { 3, 1, 2, 2 }, dtype: float64, generator: gen);
        using var eps = randn(new long[] { 3, 1, 2, 2 }, dtype: float64, generator: gen);
        using var t = tensor(new long[] { 0, 40, 99 });
        var x0d = x0.data<double>().ToArray();
        var epsd = eps.data<double>().ToArray();
        using var v = DiffusionLoss.Target(schedule, PredictionType.VPrediction, x0, eps, t);
        var vd = v.data<double>().ToArray();
        int[] ts = { 0, 40, 99 };
        for (int i = 0; i < vd.Length; i++)
        {
            double a = abars[ts[i / 4]];
            Assert.AreEqual(Math.Sqrt(a) * epsd[i] - Math.Sqrt(1 - a) * x0d[i], vd[i], 1e-6);
        }

        using var e = DiffusionLoss.Target(schedule, PredictionType.Epsilon, x0, eps, t);
        using var s = DiffusionLoss.Target(schedule, PredictionType.Sample, x0, eps, t);
        CollectionAssert.AreEqual(epsd, e.data<double>().ToArray());
        CollectionAssert.AreEqual(x0d, s.data<double>().ToArray());
    }

    [TestMethod]
    public void WeightedMseWeighsEachSample()
    {
        using var pred = tensor(new float[] { 1, 1, 0, 0 }, new long[] { 2, 2 });
        using var target = zeros(2, 2);
        using var w = tensor(new float[] { 3, 5 });
        using var loss = DiffusionLoss.WeightedMse(pred, target, w);
        Assert.AreEqual((3 * 1.0 + 5 * 0.0) / 2, loss.item<float>(), 1e-6);
        using var plain = DiffusionLoss.WeightedMse(pred, target, null);
        Assert.AreEqual(0.5, plain.item<float>(), 1e-6);
    }

    /// <summary>The loss on fixed timesteps and noise (the same before and after training).</summary>
    private static double EvalLoss(UNet model, DiffusionSchedule schedule, PredictionType p, Tensor x0)
    {
        model.eval();
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        using var gen = new Generator(123);
        double total = 0;
        for (int r = 0; r < 4; r++)
        {
            var t = randint(0, schedule.Timesteps, new long[] { x0.shape[0] }, dtype: int64, generator: gen);
            var eps = randn(x0.shape, generator: gen);
            var xt = schedule.AddNoise(x0, eps, t);
            var target = DiffusionLoss.Target(schedule, p, x0, eps, t);
            total += nn.functional.mse_loss(model.forward(xt, t), target).item<float>();
        }

        return total / 4;
    }

    [TestMethod]
    public void TrainingLoopLowersTheLossForEveryPrediction()
    {
        var config = new UNetConfig
        {
            ImageSize = 8, BaseChannels = 8, ChannelMultipliers = new[] { 1, 2 }, AttentionResolutions = new[] { 4 }, NumResBlocks = 1, GroupNormGroups = 4,
        };
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 50);
        using var x0 = TestData.SquaresTensor(8);
        foreach (var p in All)
        {
            manual_seed(7);
            using var model = new UNet(config);
            using var ema = new UNet(config);
            using var loop = new DiffusionTrainingLoop(model, ema, schedule,
                new TrainingSettings { LearningRate = 2e-3, Seed = 5, Prediction = p, LossWeighting = LossWeighting.None }, CPU);
            double before = EvalLoss(model, schedule, p, x0);
            var losses = new List<float>();
            for (int i = 0; i < 20; i++) losses.Add(loop.TrainStep(x0));
            double after = EvalLoss(model, schedule, p, x0);
            Assert.IsTrue(losses.All(float.IsFinite), $"{p}: finite losses");
            Assert.IsLessThan(0.8 * before, after, $"{p}: loss on fixed (t, eps) from {before:G4} to {after:G4}; training losses {string.Join(", ", losses.Select(l => l.ToString("G3")))}");
        }
    }

    [TestMethod]
    public void TrainingLoopWithMinSnrWeightsRuns()
    {
        var config = new UNetConfig { ImageSize = 8, BaseChannels = 8, ChannelMultipliers = new[] { 1 }, AttentionResolutions = Array.Empty<int>(), NumResBlocks = 1, GroupNormGroups = 4 };
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 50);
        using var x0 = TestData.SquaresTensor(4);
        using var model = new UNet(config);
        using var ema = new UNet(config);
        using var loop = new DiffusionTrainingLoop(model, ema, schedule,
            new TrainingSettings { Seed = 1, Prediction = PredictionType.VPrediction, LossWeighting = LossWeighting.MinSnr }, CPU);
        Assert.IsTrue(float.IsFinite(loop.TrainStep(x0)));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DiffusionTrainingLoop(model, ema, schedule,
            new TrainingSettings { LossWeighting = (LossWeighting)9 }, CPU));
    }
}
