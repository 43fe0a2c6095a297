using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using static Microsoft.ML.Diffusion.Tests.Schedulers.SigmaSpaceReference;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>Euler on Karras sigmas (EDM Algorithm 2 without churn) against a float64 recomputation, and the oracle loop.</summary>
[TestClass]
public class EulerKarrasSchedulerTests
{
    private static readonly DiffusionSchedule Linear = new(NoiseSchedule.Linear, T);

    [TestMethod]
    public void SigmasTimestepsAndScalingFollowEdmAndDiffusers()
    {
        var sch = new EulerKarrasScheduler(Linear, clipSample: false);
        sch.SetTimesteps(10);
        var karras = Karras(10);
        Assert.HasCount(11, sch.Sigmas);
        for (int i = 0; i <= 10; i++) Assert.AreEqual(karras[i], sch.Sigmas[i], 1e-9 * Math.Max(1, karras[i]));
        Assert.AreEqual(Math.Sqrt(karras[0] * karras[0] + 1), sch.InitNoiseSigma, 1e-9);
        for (int i = 0; i < 10; i++) Assert.AreEqual(TimestepOf(karras[i]), sch.ModelTimestep(i), 1e-6);
        Assert.AreEqual(999.0, sch.ModelTimestep(0), 1e-6);
        Assert.AreEqual(0.0, sch.ModelTimestep(9), 1e-6);
        Assert.AreEqual(1, sch.Order);
        Assert.AreEqual(SchedulerCapabilities.None, ((IDiffusionScheduler)sch).Capabilities);

        using var x = full(new long[] { 1, 1, 2, 2 }, 3.0, dtype: float64);
        using var scaled = sch.ScaleModelInput(x, 4);
        Assert.AreEqual(3.0 / Math.Sqrt(karras[4] * karras[4] + 1), scaled[0, 0, 0, 0].item<double>(), 1e-12);
    }

    [TestMethod]
    [DataRow(PredictionType.Epsilon)]
    [DataRow(PredictionType.VPrediction)]
    [DataRow(PredictionType.Sample)]
    public void OneStepMatchesEdmAlgorithm2WithoutChurn(PredictionType prediction)
    {
        var sch = new EulerKarrasScheduler(Linear, clipSample: false, prediction: prediction);
        sch.SetTimesteps(10);
        var s = Karras(10);
        var rng = new Random(5);
        var xs = Enumerable.Range(0, 8).Select(_ => rng.NextDouble() * 20 - 10).ToArray();
        var outs = Enumerable.Range(0, 8).Select(_ => rng.NextDouble() * 2 - 1).ToArray();
        using var x = SigmaSpaceReference.Tensor(xs, new long[] { 2, 1, 2, 2 });
        using var o = SigmaSpaceReference.Tensor(outs, new long[] { 2, 1, 2, 2 });
        const int i = 3;
        var result = sch.StepAt(i, o, x);
        var got = Values(result.PrevSample);
        var gotX0 = Values(result.PredictedX0);
        for (int k = 0; k < 8; k++)
        {
            double sigma = s[i], c = Math.Sqrt(sigma * sigma + 1);
            // D(x; sigma): eps -> x - sigma eps; v -> x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) v; sample -> the output.
            double d0 = prediction switch
            {
                PredictionType.Epsilon => xs[k] - sigma * outs[k],
                PredictionType.VPrediction => xs[k] / (c * c) - sigma / c * outs[k],
                _ => outs[k],
            };
            double d = (xs[k] - d0) / sigma;                                           // EDM Algorithm 2, line 7 (gamma = 0)
            double expected = xs[k] + (s[i + 1] - sigma) * d;                          // line 8
            Assert.AreEqual(expected, got[k], 1e-9 * Math.Max(1, Math.Abs(expected)));
            Assert.AreEqual(d0, gotX0[k], 1e-9);
        }
        result.PrevSample.Dispose();
        result.PredictedX0.Dispose();
    }

    [TestMethod]
    [DataRow(PredictionType.Epsilon, 10)]
    [DataRow(PredictionType.VPrediction, 25)]
    [DataRow(PredictionType.Sample, 5)]
    public void OracleLoopRecoversX0(PredictionType prediction, int steps)
    {
        var sch = new EulerKarrasScheduler(Linear, clipSample: false, prediction: prediction);
        sch.SetTimesteps(steps);
        Assert.IsLessThan(1e-3, OracleError(sch, prediction, 11));
    }

    [TestMethod]
    public void StepByTimestepIsRefused_StepAtIsTheContract()
    {
        IDiffusionScheduler sch = new EulerKarrasScheduler(Linear);
        using var x = zeros(1, 1, 2, 2);
        var e = Assert.ThrowsExactly<NotSupportedException>(() => sch.Step(x, sch.Timesteps[0], x));
        StringAssert.Contains(e.Message, "StepAt");
    }
}
