using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using static Microsoft.ML.Diffusion.Tests.Schedulers.SigmaSpaceReference;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>Heun on Karras sigmas (EDM Algorithm 1) against a float64 recomputation, and the oracle loop.</summary>
[TestClass]
public class HeunKarrasSchedulerTests
{
    private static readonly DiffusionSchedule Linear = new(NoiseSchedule.Linear, T);

    /// <summary>A smooth toy network in VP terms: eps(x_in, sigma) = 0.5 x_in + 0.1 sigma.</summary>
    private static double ToyEps(double xIn, double sigma) => 0.5 * xIn + 0.1 * sigma;

    [TestMethod]
    public void LoopInterleavesSigmasLikeDiffusers_2nMinus1Calls()
    {
        var sch = new HeunKarrasScheduler(Linear, clipSample: false);
        sch.SetTimesteps(6);
        var s = Karras(6);
        Assert.AreEqual(2, sch.Order);
        Assert.HasCount(11, sch.Timesteps);
        var expected = new[] { s[0], s[1], s[1], s[2], s[2], s[3], s[3], s[4], s[4], s[5], s[5] };
        for (int p = 0; p < 11; p++) Assert.AreEqual(expected[p], sch.LoopSigmas[p], 1e-9 * Math.Max(1, expected[p]));
    }

    [TestMethod]
    public void PredictorAndCorrectionMatchEdmAlgorithm1()
    {
        var sch = new HeunKarrasScheduler(Linear, clipSample: false);
        sch.SetTimesteps(6);
        var s = Karras(6);
        var rng = new Random(9);
        var xs = Enumerable.Range(0, 4).Select(_ => rng.NextDouble() * 40 - 20).ToArray();
        const int i = 2;                                               // the step from sigma_2 to sigma_3: positions 4 and 5
        double Scale(double v, double sigma) => v / Math.Sqrt(sigma * sigma + 1);

        using var x = SigmaSpaceReference.Tensor(xs, new long[] { 1, 1, 2, 2 });
        using var e1 = SigmaSpaceReference.Tensor(xs.Select(v => ToyEps(Scale(v, s[i]), s[i])).ToArray(), new long[] { 1, 1, 2, 2 });
        var predictor = sch.StepAt(2 * i, e1, x);
        var xPrime = Values(predictor.PrevSample);
        using var e2 = SigmaSpaceReference.Tensor(xPrime.Select(v => ToyEps(Scale(v, s[i + 1]), s[i + 1])).ToArray(), new long[] { 1, 1, 2, 2 });
        var corrected = sch.StepAt(2 * i + 1, e2, predictor.PrevSample);
        var got = Values(corrected.PrevSample);
        for (int k = 0; k < 4; k++)
        {
            double h = s[i + 1] - s[i];
            double d = (xs[k] - (xs[k] - s[i] * ToyEps(Scale(xs[k], s[i]), s[i]))) / s[i];          // line 4: d_i = (x_i - D(x_i; t_i))/t_i
            double x1 = xs[k] + h * d;                                                             // line 5
            Assert.AreEqual(x1, xPrime[k], 1e-9 * Math.Max(1, Math.Abs(x1)));
            double d2 = (x1 - (x1 - s[i + 1] * ToyEps(Scale(x1, s[i + 1]), s[i + 1]))) / s[i + 1];  // line 7
            double expected = xs[k] + h * (0.5 * d + 0.5 * d2);                                    // line 8
            Assert.AreEqual(expected, got[k], 1e-9 * Math.Max(1, Math.Abs(expected)));
        }
        foreach (var t in new[] { predictor.PrevSample, predictor.PredictedX0, corrected.PrevSample, corrected.PredictedX0 }) t.Dispose();

        // The last position is a plain Euler step to sigma = 0: it lands on D.
        using var xl = SigmaSpaceReference.Tensor(xs, new long[] { 1, 1, 2, 2 });
        var last = sch.StepAt(10, e1, xl);
        CollectionAssert.AreEqual(Values(last.PredictedX0), Values(last.PrevSample));
    }

    [TestMethod]
    public void CorrectionWithoutItsPredictorThrows()
    {
        var sch = new HeunKarrasScheduler(Linear);
        sch.SetTimesteps(4);
        using var x = zeros(1, 1, 2, 2);
        Assert.ThrowsExactly<InvalidOperationException>(() => sch.StepAt(3, x, x));
    }

    [TestMethod]
    [DataRow(PredictionType.Epsilon, 10)]
    [DataRow(PredictionType.VPrediction, 18)]
    [DataRow(PredictionType.Sample, 3)]
    public void OracleLoopRecoversX0(PredictionType prediction, int steps)
    {
        using var sch = new HeunKarrasScheduler(Linear, clipSample: false, prediction: prediction);
        sch.SetTimesteps(steps);
        Assert.IsLessThan(1e-3, OracleError(sch, prediction, 12));
    }
}
