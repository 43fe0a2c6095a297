using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Tests.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

[TestClass]
public class SchedulerStepTests
{
    private static readonly double[] X = { 0.3, -0.8, 1.2, -0.1, 0.5, 0.9 };
    private static readonly double[] Eps = { 0.2, -1.1, 0.4, 0.7, -0.3, 1.5 };
    private static readonly double[] Z = { 0.5, -0.2, 1.0, -1.3, 0.05, 0.8 };
    private static readonly double[] AlphaBarLinear = ReferenceSchedules.AlphaBars(ReferenceSchedules.LinearBetas(1000));

    private static Tensor T32(double[] v) => tensor(v.Select(x => (float)x).ToArray(), new long[] { 1, 1, 2, 3 });

    private static void AssertClose(double[] expected, Tensor actual, double tol)
    {
        var a = actual.to_type(ScalarType.Float64);
        var got = a.data<double>().ToArray();
        a.Dispose();
        Assert.HasCount(expected.Length, got);
        for (int i = 0; i < got.Length; i++)
        {
            Assert.AreEqual(expected[i], got[i], tol, $"element {i}");
        }
    }

    [TestMethod]
    [DataRow(1000, 500, true, nameof(VarianceType.FixedSmall))]
    [DataRow(1000, 100, true, nameof(VarianceType.FixedSmall))]
    [DataRow(1000, 500, false, nameof(VarianceType.FixedLarge))]
    [DataRow(1000, 0, true, nameof(VarianceType.FixedSmall))]
    [DataRow(50, 500, true, nameof(VarianceType.FixedSmall))]
    [DataRow(50, 500, false, nameof(VarianceType.FixedLarge))]
    [DataRow(50, 20, false, nameof(VarianceType.FixedSmall))]
    [DataRow(50, 0, false, nameof(VarianceType.FixedLarge))]
    public void DdpmStep_MatchesFloat64Recomputation(int steps, int t, bool clip, string varianceName)
    {
        var variance = Enum.Parse<VarianceType>(varianceName);
        var sch = new DdpmScheduler(new DiffusionSchedule(NoiseSchedule.Linear, 1000), variance, clip);
        sch.SetTimesteps(steps);
        int prev = t - 1000 / steps;

        // Float64 re-statement of DDPM eq. 6-7 / Algorithm 2 with the strided alpha_bar_prev (diffusers' general form).
        double ab = AlphaBarLinear[t], ap = prev < 0 ? 1 : AlphaBarLinear[prev];
        double at = ab / ap, bt = 1 - at;
        double var = prev < 0 ? 0 : variance == VarianceType.FixedSmall ? (1 - ap) / (1 - ab) * bt : bt;
        var expected = new double[X.Length];
        for (int i = 0; i < X.Length; i++)
        {
            double x0 = (X[i] - Math.Sqrt(1 - ab) * Eps[i]) / Math.Sqrt(ab);
            if (clip)
            {
                x0 = Math.Clamp(x0, -1, 1);
            }

            double mean = Math.Sqrt(ap) * bt / (1 - ab) * x0 + Math.Sqrt(at) * (1 - ap) / (1 - ab) * X[i];
            expected[i] = mean + Math.Sqrt(var) * Z[i];
        }

        using var x = T32(X);
        using var e = T32(Eps);
        using var z = T32(Z);
        using var y = sch.Step(e, t, x, z);
        Assert.AreEqual(ScalarType.Float32, y.dtype);
        CollectionAssert.AreEqual(x.shape, y.shape);
        AssertClose(expected, y, 1e-5);

        if (t == 0)
        {
            using var yNoNoise = sch.Step(e, t, x); // the step onto x_0 adds no noise and needs none
            AssertClose(expected, yNoNoise, 1e-5);
        }
        else
        {
            Assert.ThrowsExactly<ArgumentNullException>(() => sch.Step(e, t, x));
        }
    }

    [TestMethod]
    [DataRow(50, 500, 0.0f, true)]
    [DataRow(50, 500, 0.5f, true)]
    [DataRow(50, 500, 1.0f, false)]
    [DataRow(10, 900, 0.0f, false)]
    [DataRow(10, 0, 1.0f, true)]
    [DataRow(1000, 300, 0.3f, true)]
    public void DdimStep_MatchesFloat64Recomputation(int steps, int t, float eta, bool clip)
    {
        var sch = new DdimScheduler(new DiffusionSchedule(NoiseSchedule.Linear, 1000), eta, clip);
        sch.SetTimesteps(steps);
        int prev = t - 1000 / steps;

        // Float64 re-statement of DDIM eq. 12 and 16 (the paper's alpha is alpha_bar).
        double ab = AlphaBarLinear[t], ap = prev < 0 ? 1 : AlphaBarLinear[prev];
        double sigma = eta * Math.Sqrt((1 - ap) / (1 - ab)) * Math.Sqrt(1 - ab / ap);
        var expected = new double[X.Length];
        for (int i = 0; i < X.Length; i++)
        {
            double x0 = (X[i] - Math.Sqrt(1 - ab) * Eps[i]) / Math.Sqrt(ab);
            double eps = Eps[i];
            if (clip)
            {
                x0 = Math.Clamp(x0, -1, 1);
                eps = (X[i] - Math.Sqrt(ab) * x0) / Math.Sqrt(1 - ab);
            }

            expected[i] = Math.Sqrt(ap) * x0 + Math.Sqrt(1 - ap - sigma * sigma) * eps + sigma * Z[i];
        }

        using var x = T32(X);
        using var e = T32(Eps);
        using var z = T32(Z);
        using var y = sch.Step(e, t, x, z);
        AssertClose(expected, y, 1e-5);
        if (eta == 0)
        {
            using var y2 = sch.Step(e, t, x); // deterministic: no noise needed, and noise is ignored
            AssertClose(expected, y2, 1e-5);
        }
    }

    [TestMethod]
    [DataRow(1000, true)]
    [DataRow(1000, false)]
    [DataRow(25, true)]
    public void DdimEta1Step_EqualsDdpmFixedSmallStep(int steps, bool clip)
    {
        // With sigma^2 = beta_tilde (eta = 1), DDIM's x_{t-1} distribution is DDPM's posterior (Song et al. 2021, section 4.1).
        var s = new DiffusionSchedule(NoiseSchedule.Cosine, 1000);
        var ddim = new DdimScheduler(s, 1f, clip);
        var ddpm = new DdpmScheduler(s, VarianceType.FixedSmall, clip);
        ddim.SetTimesteps(steps);
        ddpm.SetTimesteps(steps);
        using var x = T32(X);
        using var e = T32(Eps);
        using var z = T32(Z);
        foreach (int t in new[] { ddim.Timesteps[0], ddim.Timesteps[steps / 2], ddim.Timesteps[^2], 0 })
        {
            using var a = ddim.Step(e, t, x, z);
            using var b = ddpm.Step(e, t, x, z);
            using var a64 = a.to_type(ScalarType.Float64);
            AssertClose(a64.data<double>().ToArray(), b, 1e-4);
        }
    }

    [TestMethod]
    public void Step_KeepsDtype_AndLeavesNoTensorsBehind()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        IDiffusionScheduler[] schedulers = { new DdpmScheduler(s), new DdimScheduler(s, 0.5f) };
        foreach (var sch in schedulers)
        {
            using var x = T32(X).to_type(ScalarType.Float64);
            using var e = T32(Eps).to_type(ScalarType.Float64);
            using var z = T32(Z).to_type(ScalarType.Float64);
            using var outer = NewDisposeScope();
            var y = sch.Step(e, 500, x, z);
            Assert.AreEqual(ScalarType.Float64, y.dtype);
            Assert.AreEqual(1, outer.DisposablesCount, "only the result is left in the caller's scope");
        }
    }

    [TestMethod]
    public void Step_RejectsBadArguments()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        var sch = new DdpmScheduler(s);
        using var x = T32(X);
        using var z = T32(Z);
        using var wrong = zeros(1, 6);
        Assert.ThrowsExactly<ArgumentException>(() => sch.Step(wrong, 10, x, z));
        Assert.ThrowsExactly<ArgumentException>(() => sch.Step(x, 10, x, wrong));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => sch.Step(x, 1000, x, z));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DdimScheduler(s).Step(x, -1, x));
    }
}
