using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Tests.Schedules;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>DDPM with learned variance (Improved DDPM eq. 15): the variance bounds, and steps that reduce to the fixed
/// variances; DDIM and DPM-Solver++ ignore the variance channels.</summary>
[TestClass]
public class LearnedVarianceSchedulerTests
{
    [TestMethod]
    [DataRow(1000, 487)]
    [DataRow(1000, 1)]
    [DataRow(1000, 0)]
    [DataRow(50, 500)]
    [DataRow(50, 20)]
    [DataRow(50, 0)]
    public void VarianceEndPointsAreBetaTildeAndBeta(int steps, int t)
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        var abar = ReferenceSchedules.AlphaBars(ReferenceSchedules.LinearBetas(1000));
        var ddpm = new DdpmScheduler(schedule, VarianceType.Learned);
        ddpm.SetTimesteps(steps);
        int prev = ddpm.PreviousTimestep(t);
        double ap = ReferenceSchedules.AlphaBarOrOne(abar, prev);
        double betaPrime = 1 - abar[t] / ap;
        double betaTilde = (1 - ap) / (1 - abar[t]) * betaPrime;
        if (prev < 0)
        {
            // Clipped: the posterior variance of the step that lands on t (improved-diffusion's posterior_log_variance_clipped).
            int above = t + 1000 / steps;
            betaTilde = (1 - abar[t]) / (1 - abar[above]) * (1 - abar[above] / abar[t]);
        }

        if (steps == 1000 && t == 487) Assert.AreEqual(0.00979, betaTilde, 5e-5, "DESIGN.md section 4");
        using var raw = tensor(new[] { -1f, 1f });
        using var logVar = ddpm.LogVariance(raw, t);
        Assert.AreEqual(Math.Log(betaTilde), logVar[0].item<float>(), 1e-5 * Math.Abs(Math.Log(betaTilde)), "v = 0 gives log beta_tilde");
        Assert.AreEqual(Math.Log(betaPrime), logVar[1].item<float>(), 1e-5 * Math.Abs(Math.Log(betaPrime)), "v = 1 gives log beta");
        var (logBeta, logBetaTilde) = ddpm.LogVarianceBounds(t);
        Assert.AreEqual(Math.Log(betaPrime), logBeta, 1e-12);
        Assert.AreEqual(Math.Log(betaTilde), logBetaTilde, 1e-9);
    }

    [TestMethod]
    [DataRow(1000, 500, PredictionType.Epsilon)]
    [DataRow(1000, 3, PredictionType.VPrediction)]
    [DataRow(50, 500, PredictionType.Sample)]
    [DataRow(50, 20, PredictionType.Epsilon)]
    [DataRow(50, 0, PredictionType.Epsilon)]
    public void LearnedStepAtTheEndPointsEqualsTheFixedSteps(int steps, int t, PredictionType prediction)
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Cosine, 1000);
        using var gen = new Generator(9, CPU);
        using var x = randn(new long[] { 2, 3, 4, 4 }, generator: gen);
        using var pred = randn(new long[] { 2, 3, 4, 4 }, generator: gen);
        using var z = randn(new long[] { 2, 3, 4, 4 }, generator: gen);
        foreach (var (r, fixedVariance) in new[] { (-1f, VarianceType.FixedSmall), (1f, VarianceType.FixedLarge) })
        {
            var learned = new DdpmScheduler(schedule, VarianceType.Learned, prediction: prediction);
            var fixedOne = new DdpmScheduler(schedule, fixedVariance, prediction: prediction);
            learned.SetTimesteps(steps);
            fixedOne.SetTimesteps(steps);
            using var rawHalf = full(new long[] { 2, 3, 4, 4 }, r);
            using var output = cat(new[] { pred, rawHalf }, 1);
            using var a = learned.Step(output, t, x, z);
            using var b = fixedOne.Step(pred, t, x, z);
            double diff = (a - b).abs().max().item<float>();
            Assert.IsLessThan(1e-5, diff, $"r = {r} vs {fixedVariance}");
            // A fixed-variance DDPM accepts the 2C output and ignores its variance half.
            using var c = fixedOne.Step(output, t, x, z);
            Assert.AreEqual(0.0, (c - b).abs().max().item<float>(), 0.0);
        }

        // The variance channels do change the learned step (t > 0).
        if (t > 0 && new DdpmScheduler(schedule, VarianceType.Learned).PreviousTimestep(t) >= 0)
        {
            var learned = new DdpmScheduler(schedule, VarianceType.Learned, prediction: prediction);
            learned.SetTimesteps(steps);
            using var o1 = cat(new[] { pred, full(new long[] { 2, 3, 4, 4 }, -0.5f) }, 1);
            using var o2 = cat(new[] { pred, full(new long[] { 2, 3, 4, 4 }, 0.5f) }, 1);
            using var d = learned.Step(o1, t, x, z) - learned.Step(o2, t, x, z);
            Assert.IsGreaterThan(1e-6, (double)d.abs().max().item<float>());
        }
    }

    [TestMethod]
    public void LearnedStepNeedsTheVarianceChannels()
    {
        var ddpm = new DdpmScheduler(new DiffusionSchedule(NoiseSchedule.Linear, 100), VarianceType.Learned);
        using var x = randn(1, 1, 4, 4);
        Assert.ThrowsExactly<ArgumentException>(() => ddpm.Step(x, 50, x, x));
        using var wrong = randn(1, 3, 4, 4);
        Assert.ThrowsExactly<ArgumentException>(() => ddpm.Step(wrong, 50, x, x));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DdpmScheduler(new DiffusionSchedule(NoiseSchedule.Linear, 100), (VarianceType)9));
    }

    [TestMethod]
    public void DdimAndDpmSolverUseOnlyThePredictionHalf()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        using var gen = new Generator(4, CPU);
        using var x = randn(new long[] { 2, 1, 4, 4 }, generator: gen);
        using var pred = randn(new long[] { 2, 1, 4, 4 }, generator: gen);
        using var z = randn(new long[] { 2, 1, 4, 4 }, generator: gen);
        using var output = cat(new[] { pred, randn(new long[] { 2, 1, 4, 4 }, generator: gen) }, 1);
        var makers = new Func<IDiffusionScheduler>[]
        {
            () => new DdimScheduler(schedule, eta: 0.5f),
            () => new DpmSolverMultistepScheduler(schedule),
        };
        foreach (var make in makers)
        {
            var withVariance = make();
            var plain = make();
            withVariance.SetTimesteps(10);
            plain.SetTimesteps(10);
            Tensor xa = x.clone(), xb = x.clone();
            foreach (int t in plain.Timesteps.Take(3))
            {
                var na = withVariance.Step(output, t, xa, z);
                var nb = plain.Step(pred, t, xb, z);
                xa.Dispose(); xb.Dispose();
                xa = na; xb = nb;
                Assert.AreEqual(0.0, (xa - xb).abs().max().item<float>(), 0.0, $"{plain.GetType().Name} at t = {t}");
            }

            xa.Dispose(); xb.Dispose();
        }
    }
}
