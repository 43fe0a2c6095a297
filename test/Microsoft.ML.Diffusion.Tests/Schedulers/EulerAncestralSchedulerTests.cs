using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using static Microsoft.ML.Diffusion.Tests.Schedulers.SigmaSpaceReference;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>Euler ancestral (diffusers' EulerAncestralDiscreteScheduler) against a float64 recomputation, and the oracle loop.</summary>
[TestClass]
public class EulerAncestralSchedulerTests
{
    private static readonly DiffusionSchedule Linear = new(NoiseSchedule.Linear, T);

    [TestMethod]
    public void TimestepsAreDiffusersLinspace_SigmasInterpolatedLinearly()
    {
        var sch = new EulerAncestralScheduler(Linear, clipSample: false);
        sch.SetTimesteps(7);
        var s = Sigmas();
        for (int j = 0; j < 7; j++)
        {
            double t = (float)(999.0 * (6 - j) / 6);                      // np.linspace(0, 999, 7, dtype=float32)[::-1]
            Assert.AreEqual(t, sch.ModelTimestep(j), 1e-4);
            int lo = (int)Math.Floor(t);
            double sigma = lo >= 999 ? s[999] : s[lo] + (t - lo) * (s[lo + 1] - s[lo]);
            Assert.AreEqual(sigma, sch.Sigmas[j], 1e-6 * sigma);
        }
        Assert.AreEqual(0.0, sch.Sigmas[7]);
        Assert.AreEqual(Math.Sqrt(s[999] * s[999] + 1), sch.InitNoiseSigma, 1e-9);
        Assert.IsTrue(sch.NeedsNoise);
    }

    [TestMethod]
    public void OneStepMatchesTheAncestralSplit()
    {
        var sch = new EulerAncestralScheduler(Linear, clipSample: false);
        sch.SetTimesteps(10);
        var rng = new Random(3);
        var xs = Enumerable.Range(0, 4).Select(_ => rng.NextDouble() * 10 - 5).ToArray();
        var eps = Enumerable.Range(0, 4).Select(_ => rng.NextDouble() * 2 - 1).ToArray();
        var zs = Enumerable.Range(0, 4).Select(_ => rng.NextDouble() * 2 - 1).ToArray();
        using var x = SigmaSpaceReference.Tensor(xs, new long[] { 1, 1, 2, 2 });
        using var e = SigmaSpaceReference.Tensor(eps, new long[] { 1, 1, 2, 2 });
        using var z = SigmaSpaceReference.Tensor(zs, new long[] { 1, 1, 2, 2 });
        const int i = 6;
        double from = sch.Sigmas[i], to = sch.Sigmas[i + 1];
        var result = sch.StepAt(i, e, x, z);
        var got = Values(result.PrevSample);
        double up = Math.Sqrt(to * to * (from * from - to * to) / (from * from));
        double down = Math.Sqrt(to * to - up * up);
        for (int k = 0; k < 4; k++)
        {
            double x0 = xs[k] - from * eps[k];
            double expected = xs[k] + (down - from) * (xs[k] - x0) / from + up * zs[k];
            Assert.AreEqual(expected, got[k], 1e-9 * Math.Max(1, Math.Abs(expected)));
        }
        result.PrevSample.Dispose();
        result.PredictedX0.Dispose();
        Assert.ThrowsExactly<ArgumentNullException>(() => sch.StepAt(i, e, x));
    }

    [TestMethod]
    [DataRow(PredictionType.Epsilon, 10)]
    [DataRow(PredictionType.VPrediction, 30)]
    [DataRow(PredictionType.Sample, 4)]
    public void OracleLoopRecoversX0(PredictionType prediction, int steps)
    {
        var sch = new EulerAncestralScheduler(Linear, clipSample: false, prediction: prediction);
        sch.SetTimesteps(steps);
        Assert.IsLessThan(1e-3, OracleError(sch, prediction, 13));
    }
}
