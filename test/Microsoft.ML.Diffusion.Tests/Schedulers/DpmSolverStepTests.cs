using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Tests.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>DPM-Solver++(2M) steps against a float64 re-statement of Lu et al. 2022, Algorithm 2.</summary>
[TestClass]
public class DpmSolverStepTests
{
    private static readonly double[] X = { 0.3, -0.8, 1.2, -0.1, 0.5, 0.9 };
    private static readonly double[] Eps = { 0.2, -1.1, 0.4, 0.7, -0.3, 1.5 };
    private static readonly double[] Eps2 = { -0.6, 0.9, 0.1, -1.4, 0.8, -0.2 };
    private static readonly double[] AlphaBarLinear = ReferenceSchedules.AlphaBars(ReferenceSchedules.LinearBetas(1000));

    private static Tensor T32(double[] v) => tensor(v.Select(x => (float)x).ToArray(), new long[] { 1, 1, 2, 3 });

    private static double[] Values(Tensor t)
    {
        using var a = t.to_type(ScalarType.Float64);
        return a.data<double>().ToArray();
    }

    private static void AssertClose(double[] expected, Tensor actual, double tol)
    {
        var got = Values(actual);
        Assert.HasCount(expected.Length, got);
        for (int i = 0; i < got.Length; i++)
        {
            Assert.AreEqual(expected[i], got[i], tol, $"element {i}");
        }
    }

    // ---- float64 reference: alpha_t = sqrt(abar), sigma_t = sqrt(1 - abar), lambda_t = log alpha_t - log sigma_t ----
    private static double Alpha(int t) => t < 0 ? 1.0 : Math.Sqrt(AlphaBarLinear[t]);

    private static double Sigma(int t) => t < 0 ? 0.0 : Math.Sqrt(1 - AlphaBarLinear[t]);

    private static double Lambda(int t) => Math.Log(Alpha(t)) - Math.Log(Sigma(t));

    private static double[] DataPrediction(double[] x, double[] eps, int t, bool clip) =>
        x.Select((xi, i) =>
        {
            double x0 = (xi - Sigma(t) * eps[i]) / Alpha(t);
            return clip ? Math.Clamp(x0, -1, 1) : x0;
        }).ToArray();

    /// <summary>x_{t_i} = (sigma_{t_i}/sigma_{t_{i-1}}) x - alpha_{t_i} (e^{-h_i} - 1) D (Algorithm 2), with sigma = 0, e^{-h} = 0 at t_i = -1.</summary>
    private static double[] Update(double[] x, double[] d, int from, int to)
    {
        double h = Lambda(to) - Lambda(from);                     // +inf when to = -1
        return x.Select((xi, i) => Sigma(to) / Sigma(from) * xi - Alpha(to) * (Math.Exp(-h) - 1) * d[i]).ToArray();
    }

    [TestMethod]
    [DataRow(999, 899, true)]
    [DataRow(499, 399, false)]
    [DataRow(99, -1, true)]
    [DataRow(99, -1, false)]
    public void FirstOrderStep_MatchesFloat64Recomputation(int t, int prev, bool clip)
    {
        var sch = new DpmSolverMultistepScheduler(new DiffusionSchedule(NoiseSchedule.Linear, 1000), clip, TimestepSpacing.Trailing);
        sch.SetTimesteps(10);
        Assert.AreEqual(prev, sch.PreviousTimestep(t));
        Assert.IsFalse(sch.NeedsNoise);

        // DPM-Solver++1: D = x_theta(x_t, t).
        var x0 = DataPrediction(X, Eps, t, clip);
        var expected = prev < 0 ? x0 : Update(X, x0, t, prev);

        using var x = T32(X);
        using var e = T32(Eps);
        using var y = sch.Step(e, t, x);
        Assert.AreEqual(ScalarType.Float32, y.dtype);
        CollectionAssert.AreEqual(x.shape, y.shape);
        AssertClose(expected, y, 1e-5);
    }

    [TestMethod]
    [DataRow(599, 499, 399, false)]
    [DataRow(999, 899, 799, true)]
    [DataRow(299, 199, 99, false)]
    public void SecondOrderStep_MatchesFloat64Recomputation(int t0, int t1, int t2, bool clip)
    {
        var sch = new DpmSolverMultistepScheduler(new DiffusionSchedule(NoiseSchedule.Linear, 1000), clip, TimestepSpacing.Trailing);
        sch.SetTimesteps(10);

        // Step 1 (first order): t0 -> t1 with eps; step 2 (second order): t1 -> t2 with eps2, reusing x_theta(t0).
        var x0a = DataPrediction(X, Eps, t0, clip);
        var x1 = Update(X, x0a, t0, t1);
        var x0b = DataPrediction(x1, Eps2, t1, clip);
        double r = (Lambda(t1) - Lambda(t0)) / (Lambda(t2) - Lambda(t1));   // r_i = h_{i-1} / h_i
        var d = x0b.Select((v, i) => (1 + 1 / (2 * r)) * v - 1 / (2 * r) * x0a[i]).ToArray();
        var expected = Update(x1, d, t1, t2);

        using var x = T32(X);
        using var e = T32(Eps);
        using var e2 = T32(Eps2);
        using var y1 = sch.Step(e, t0, x);
        AssertClose(x1, y1, 1e-5);
        using var y2 = sch.Step(e2, t1, y1);
        AssertClose(expected, y2, 1e-5);

        // The correction is really applied: after Reset the same call is a first-order step, which differs.
        sch.Reset();
        using var firstOrder = sch.Step(e2, t1, y1);
        AssertClose(Update(x1, x0b, t1, t2), firstOrder, 1e-5);
        Assert.IsGreaterThan(1e-3, Values(y2).Zip(Values(firstOrder), (a, b) => Math.Abs(a - b)).Max());
    }

    [TestMethod]
    public void FinalStep_IsFirstOrder_AndReturnsTheDataPrediction()
    {
        var sch = new DpmSolverMultistepScheduler(new DiffusionSchedule(NoiseSchedule.Linear, 1000), clipSample: false);
        sch.SetTimesteps(10);
        using var x = T32(X);
        using var e = T32(Eps);
        using var e2 = T32(Eps2);
        using var y1 = sch.Step(e, 199, x);
        using var y2 = sch.Step(e2, 99, y1); // the last listed timestep: lands on x_0 with the first-order update
        AssertClose(DataPrediction(Values(y1), Eps2, 99, clip: false), y2, 1e-5);
    }

    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void FirstStep_EqualsDeterministicDdimStep(bool clip)
    {
        // DPM-Solver++1 is DDIM (eta = 0): alpha_t x0 + sigma_t (x - alpha_s x0)/sigma_s, also with a clipped x0.
        var s = new DiffusionSchedule(NoiseSchedule.Cosine, 1000);
        foreach (var spacing in Enum.GetValues<TimestepSpacing>())
        {
            var dpm = new DpmSolverMultistepScheduler(s, clip, spacing);
            var ddim = new DdimScheduler(s, 0f, clip, spacing);
            dpm.SetTimesteps(25);
            ddim.SetTimesteps(25);
            using var x = T32(X);
            using var e = T32(Eps);
            foreach (int t in new[] { dpm.Timesteps[0], dpm.Timesteps[12], dpm.Timesteps[^1] })
            {
                dpm.Reset();
                using var a = dpm.Step(e, t, x);
                using var b = ddim.Step(e, t, x);
                var expected = Values(b);
                // Unclipped x0 at the noisiest cosine timesteps is in the hundreds: compare relative to float32 precision.
                AssertClose(expected, a, 1e-5 * Math.Max(1, expected.Max(Math.Abs)));
            }
        }
    }

    [TestMethod]
    public void Step_KeepsDtype_AndLeavesOnlyTheResultInTheCallersScope()
    {
        var sch = new DpmSolverMultistepScheduler(new DiffusionSchedule(NoiseSchedule.Linear, 1000));
        sch.SetTimesteps(10);
        using var x = T32(X).to_type(ScalarType.Float64);
        using var e = T32(Eps).to_type(ScalarType.Float64);
        foreach (int t in new[] { 999, 899, 799 })
        {
            using var outer = NewDisposeScope();
            var y = sch.Step(e, t, x);
            Assert.AreEqual(ScalarType.Float64, y.dtype);
            Assert.AreEqual(1, outer.DisposablesCount, "the kept x0 prediction is not in the caller's scope");
        }

        // The kept prediction survives the caller's scopes: the next (second-order) step still works.
        using var last = sch.Step(e, 699, x);
        Assert.IsFalse(Values(last).Any(double.IsNaN));
        sch.Dispose();
    }

    [TestMethod]
    public void Step_RejectsBadArguments()
    {
        var sch = new DpmSolverMultistepScheduler(new DiffusionSchedule(NoiseSchedule.Linear, 1000));
        using var x = T32(X);
        using var wrong = zeros(1, 6);
        Assert.ThrowsExactly<ArgumentException>(() => sch.Step(wrong, 10, x));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => sch.Step(x, 1000, x));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => sch.Step(x, -1, x));
        Assert.ThrowsExactly<ArgumentNullException>(() => new DpmSolverMultistepScheduler(null!));
    }
}
