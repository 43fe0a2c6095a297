using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Tests.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>
/// Epsilon, x_0 and v outputs (Salimans &amp; Ho 2022, section 4): conversions, DDIM steps and oracle sampling loops,
/// with the expected values recomputed here in float64 from x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps.
/// </summary>
[TestClass]
public class PredictionTypeTests
{
    private static readonly PredictionType[] All = { PredictionType.Epsilon, PredictionType.Sample, PredictionType.VPrediction };

    /// <summary>The exact output of a model of kind <paramref name="p"/> for known x_0 and eps, in float64.</summary>
    private static double[] Target(PredictionType p, double[] x0, double[] eps, double abar) => p switch
    {
        PredictionType.Epsilon => eps,
        PredictionType.Sample => x0,
        _ => x0.Zip(eps, (x, e) => Math.Sqrt(abar) * e - Math.Sqrt(1 - abar) * x).ToArray(),   // v = alpha eps - sigma x_0
    };

    private static double[] Noisy(double[] x0, double[] eps, double abar) =>
        x0.Zip(eps, (x, e) => Math.Sqrt(abar) * x + Math.Sqrt(1 - abar) * e).ToArray();

    private static (double[] X0, double[] Eps) Draw(int n, int seed)
    {
        var rng = new Random(seed);
        double Normal() => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
        return (Enumerable.Range(0, n).Select(_ => Math.Clamp(Normal(), -1, 1)).ToArray(), Enumerable.Range(0, n).Select(_ => Normal()).ToArray());
    }

    private static double MaxDiff(Tensor a, double[] expected)
    {
        var got = a.to_type(float64).data<double>().ToArray();
        return got.Zip(expected, (g, e) => Math.Abs(g - e)).Max();
    }

    [TestMethod]
    public void EachPredictionConvertsBackToX0AndEps()
    {
        var abars = ReferenceSchedules.AlphaBars(ReferenceSchedules.LinearBetas(1000));
        var (x0, eps) = Draw(2 * 16, 1);
        foreach (int t in new[] { 0, 10, 500, 999 })
        {
            double abar = abars[t];
            var xt = Noisy(x0, eps, abar);
            foreach (var p in All)
            {
                using var scope = NewDisposeScope();
                var output = tensor(Target(p, x0, eps, abar), new long[] { 2, 1, 4, 4 }, float64);
                var sample = tensor(xt, new long[] { 2, 1, 4, 4 }, float64);
                var (gotX0, gotEps) = SchedulerCore.ToX0AndEps(output, sample, abar, p);
                Assert.IsLessThan(1e-5, MaxDiff(gotX0, x0), $"x0 of {p} at t = {t}");
                Assert.IsLessThan(1e-5, MaxDiff(gotEps, eps), $"eps of {p} at t = {t}");
                Assert.IsFalse(ReferenceEquals(gotX0, output), "x0 is a new tensor (DPM-Solver++ keeps it between steps)");
            }
        }
    }

    [TestMethod]
    public void DdimStepWithX0OrVOutputEqualsTheEpsilonStep()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        var abars = ReferenceSchedules.AlphaBars(ReferenceSchedules.LinearBetas(1000));
        var (x0, eps) = Draw(2 * 16, 2);
        foreach (bool clip in new[] { false, true })
        {
            foreach (int t in new[] { 900, 500, 0 })
            {
                double abar = abars[t];
                // A sample that is not exactly on the x_0/eps line of the model output: use a different eps for x_t.
                var xt = Noisy(x0, eps.Select(e => 1.5 * e).ToArray(), abar);
                // The model's epsilon, and the x_0 and v that the same epsilon implies at this x_t.
                var epsOut = eps;
                var x0Out = xt.Zip(epsOut, (x, e) => (x - Math.Sqrt(1 - abar) * e) / Math.Sqrt(abar)).ToArray();
                var vOut = Target(PredictionType.VPrediction, x0Out, epsOut, abar);
                using var scope = NewDisposeScope();
                var sample = tensor(xt, new long[] { 2, 1, 4, 4 }, float64);
                var reference = new DdimScheduler(schedule, 0f, clip);
                reference.SetTimesteps(10);
                var expected = reference.Step(tensor(epsOut, new long[] { 2, 1, 4, 4 }, float64), t, sample).data<double>().ToArray();
                foreach (var (p, output) in new[] { (PredictionType.Sample, x0Out), (PredictionType.VPrediction, vOut) })
                {
                    var sch = new DdimScheduler(schedule, 0f, clip, prediction: p);
                    sch.SetTimesteps(10);
                    var got = sch.Step(tensor(output, new long[] { 2, 1, 4, 4 }, float64), t, sample);
                    Assert.IsLessThan(1e-5, MaxDiff(got, expected), $"{p}, clip = {clip}, t = {t}");
                }
            }
        }
    }

    [TestMethod]
    public void DynamicThresholdingClampsAndDividesByThePercentile()
    {
        // Sample 0 lies in [-0.5, 0.5] (s = max(1, .) = 1: unchanged); sample 1 spans [-3, 4.6] (s = its 99.5th percentile of |x|).
        int n = 20;
        var values = new double[2 * n];
        for (int i = 0; i < n; i++)
        {
            values[i] = -0.5 + i / (double)(n - 1);
            values[n + i] = -3 + 0.4 * i;
        }

        var expected = new double[2 * n];
        for (int b = 0; b < 2; b++)
        {
            var abs = values.Skip(b * n).Take(n).Select(Math.Abs).OrderBy(v => v).ToArray();
            double pos = 0.995 * (n - 1);                                       // numpy's linear interpolation
            int lo = (int)Math.Floor(pos);
            double q = abs[lo] + (pos - lo) * (abs[Math.Min(lo + 1, n - 1)] - abs[lo]);
            double s = Math.Max(1, q);
            for (int i = 0; i < n; i++) expected[b * n + i] = Math.Clamp(values[b * n + i], -s, s) / s;
        }

        Assert.AreNotEqual(values[2 * n - 1] / 4.6, expected[2 * n - 1], "the percentile is below the maximum, so the largest value is clamped");
        using var x = tensor(values, new long[] { 2, 1, 4, 5 }, float32);
        using var got = SchedulerCore.DynamicThreshold(x);
        CollectionAssert.AreEqual(new long[] { 2, 1, 4, 5 }, got.shape);
        Assert.IsLessThan(1e-5, MaxDiff(got, expected));
        using var plain = SchedulerCore.ThresholdX0(x, clip: true, dynamic: true);
        Assert.IsLessThan(1e-5, MaxDiff(plain, expected), "dynamic thresholding replaces clipping");
    }

    private static IDiffusionScheduler Make(string kind, DiffusionSchedule s, PredictionType p, bool dynamic) => kind switch
    {
        "ddpm" => new DdpmScheduler(s, prediction: p, dynamicThresholding: dynamic),
        "ddim" => new DdimScheduler(s, 0f, prediction: p, dynamicThresholding: dynamic),
        _ => new DpmSolverMultistepScheduler(s, prediction: p, dynamicThresholding: dynamic),
    };

    [TestMethod]
    public void OracleRecoversX0WithEverySchedulerAndPrediction()
    {
        const int T = 100;
        var schedule = new DiffusionSchedule(NoiseSchedule.Cosine, T);
        var abar = ReferenceSchedules.AlphaBars(ReferenceSchedules.CosineBetas(T));
        long[] shape = { 2, 1, 8, 8 };
        int seed = 10;
        foreach (var kind in new[] { "ddpm", "ddim", "dpm" })
        {
            foreach (var p in All)
            {
                foreach (bool dynamic in new[] { false, true })
                {
                    var sch = Make(kind, schedule, p, dynamic);
                    sch.SetTimesteps(20);
                    using var gen = new Generator((ulong)seed++);
                    using var x0 = randn(shape, generator: gen).clamp(-1, 1);
                    var x = randn(shape, generator: gen);
                    foreach (int t in sch.Timesteps)
                    {
                        using var scope = NewDisposeScope();
                        // Oracle: the exact eps that x_t and the known x_0 imply, expressed as the scheduler's prediction type.
                        double a = Math.Sqrt(abar[t]), sg = Math.Sqrt(1 - abar[t]);
                        var eps = (x - x0 * a) / sg;
                        var output = p switch
                        {
                            PredictionType.Epsilon => eps,
                            PredictionType.Sample => x0.clone(),
                            _ => eps * a - x0 * sg,
                        };
                        var noise = sch.NeedsNoise ? randn(shape, generator: gen) : null;
                        var next = sch.Step(output, t, x, noise).MoveToOuterDisposeScope();
                        x.Dispose();
                        x = next;
                    }

                    using var err = (x - x0).abs().max();
                    Assert.IsLessThan(1e-3, err.item<float>(), $"{kind}, {p}, dynamic thresholding = {dynamic}");
                    x.Dispose();
                    (sch as IDisposable)?.Dispose();
                }
            }
        }
    }

    [TestMethod]
    public void SchedulerFactoryPassesPredictionAndThresholding()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 50);
        var ddpm = (DdpmScheduler)Sampling.SchedulerFactory.Create(s, new SamplerOptions { Sampler = SamplerKind.Ddpm, DynamicThresholding = true }, PredictionType.Sample);
        Assert.AreEqual(PredictionType.Sample, ddpm.Prediction);
        Assert.IsTrue(ddpm.DynamicThresholding);
        var ddim = (DdimScheduler)Sampling.SchedulerFactory.Create(s, new SamplerOptions { Sampler = SamplerKind.Ddim, Spacing = TimestepSpacing.Trailing }, PredictionType.VPrediction);
        Assert.AreEqual(PredictionType.VPrediction, ddim.Prediction);
        Assert.IsFalse(ddim.DynamicThresholding);
        using var dpm = (DpmSolverMultistepScheduler)Sampling.SchedulerFactory.Create(s, new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlus, DynamicThresholding = true });
        Assert.AreEqual(PredictionType.Epsilon, dpm.Prediction);
        Assert.IsTrue(dpm.DynamicThresholding);
    }

    [TestMethod]
    public void UnknownPredictionIsRejected()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 10);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DdimScheduler(s, prediction: (PredictionType)7));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DdpmScheduler(s, prediction: (PredictionType)7));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DpmSolverMultistepScheduler(s, prediction: (PredictionType)7));
    }
}
