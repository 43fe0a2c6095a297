using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using static Microsoft.ML.Diffusion.Tests.Schedulers.MultistepReference;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>
/// DPM-Solver++(2M) on Karras sigmas (the <see cref="SamplerKind.DpmSolverPlusPlusKarras"/> row) and on Lu lambdas: the levels and
/// timesteps against EDM eq. 5 / uniform lambda and diffusers' _sigma_to_t, a second-order step against a float64 recomputation of
/// Algorithm 2 on those levels, and oracle loops.
/// </summary>
[TestClass]
public class DpmSolverKarrasTests
{
    private static readonly DiffusionSchedule Linear = new(NoiseSchedule.Linear, 1000);
    private static readonly double[] X = { 0.3, -0.8, 1.2, -0.1, 0.5, 0.9 };
    private static readonly double[] Eps = { 0.2, -1.1, 0.4, 0.7, -0.3, 1.5 };
    private static readonly double[] Eps2 = { -0.6, 0.9, 0.1, -1.4, 0.8, -0.2 };

    [TestMethod]
    public void KarrasRow_LevelsAndTimestepsFollowEdmEq5AndDiffusers()
    {
        var sch = (VpMultistepScheduler)SchedulerFactory.Create(Linear,
            new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlusKarras, Steps = 10, ClipSample = false });
        var karras = SigmaSpaceReference.Karras(10);                             // EDM eq. 5, rho = 7, over [s_0, s_999]
        for (int i = 0; i < 10; i++)
        {
            Assert.AreEqual(1 / (karras[i] * karras[i] + 1), sch.AlphaBars[i], 1e-12 * sch.AlphaBars[i] + 1e-15, $"level {i}");
            Assert.AreEqual((int)Math.Round(SigmaSpaceReference.TimestepOf(karras[i]), MidpointRounding.ToEven), sch.Timesteps[i], $"timestep {i}");
        }

        Assert.AreEqual(1.0, sch.AlphaBars[10], "final_sigmas_type zero");
        Assert.AreEqual(SchedulerCapabilities.MultistepOptions, sch.Capabilities, "no classifier guidance on Karras levels");
        Assert.AreEqual(SamplerRegistry.Get(SamplerKind.DpmSolverPlusPlusKarras).Capabilities, sch.Capabilities);
    }

    [TestMethod]
    public void LuLambdas_AreEvenlySpacedInLambda()
    {
        var sch = new DpmSolverMultistepScheduler(Linear, new MultistepSettings { UseLuLambdas = true });
        sch.SetTimesteps(8);
        var lambdas = Enumerable.Range(0, 8).Select(i => Level(sch.AlphaBars[i]).Lambda).ToArray();
        double first = Level(AlphaBarLinear[999]).Lambda, last = Level(AlphaBarLinear[0]).Lambda;
        Assert.AreEqual(first, lambdas[0], 1e-9);
        Assert.AreEqual(last, lambdas[7], 1e-9);
        for (int i = 1; i < 8; i++) Assert.AreEqual((last - first) / 7, lambdas[i] - lambdas[i - 1], 1e-9, $"step {i}");
    }

    [TestMethod]
    public void SecondOrderStepOnKarrasLevels_MatchesAlgorithm2()
    {
        var sch = new DpmSolverMultistepScheduler(Linear, new MultistepSettings { ClipSample = false, UseKarrasSigmas = true });
        sch.SetTimesteps(10);
        const int i = 4;
        double a0 = sch.AlphaBars[i - 1], a1 = sch.AlphaBars[i], a2 = sch.AlphaBars[i + 1];
        // x_{i+1} = (sigma_{i+1}/sigma_i) x - alpha_{i+1} (e^{-h} - 1) D, D = (1 + 1/(2r)) m_i - 1/(2r) m_{i-1}, r = h_{i-1}/h_i.
        static double[] Step(double[] x, double[] d, double from, double to)
        {
            var (_, sS, lS) = Level(from);
            var (aT, sT, lT) = Level(to);
            return x.Select((v, k) => sT / sS * v - aT * (Math.Exp(-(lT - lS)) - 1) * d[k]).ToArray();
        }

        var m0 = DataPrediction(X, Eps, a0);
        var x1 = Step(X, m0, a0, a1);
        var m1 = DataPrediction(x1, Eps2, a1);
        double r = (Level(a1).Lambda - Level(a0).Lambda) / (Level(a2).Lambda - Level(a1).Lambda);
        var x2 = Step(x1, m1.Select((v, k) => (1 + 1 / (2 * r)) * v - 1 / (2 * r) * m0[k]).ToArray(), a1, a2);

        using var x = T32(X);
        using var e = T32(Eps);
        using var e2 = T32(Eps2);
        var s1 = sch.StepAt(i - 1, e, x);
        AssertClose(x1, s1.PrevSample, 1e-5, "first order");
        var s2 = sch.StepAt(i, e2, s1.PrevSample);
        AssertClose(x2, s2.PrevSample, 1e-5, "second order");
        foreach (var t in new[] { s1.PrevSample, s1.PredictedX0, s2.PrevSample, s2.PredictedX0 }) t.Dispose();
    }

    [TestMethod]
    public void CosineSchedule_KarrasTimestepsAreTruncatedByDpmSolverAndRoundedByUniPC()
    {
        // diffusers: DPM-Solver skips the rounding for squaredcos_cap_v2 and casts to int64; UniPC rounds.
        var cosine = new DiffusionSchedule(NoiseSchedule.Cosine, 1000);
        var settings = new MultistepSettings { UseKarrasSigmas = true };
        var dpm = new DpmSolverMultistepScheduler(cosine, settings);
        var unipc = new UniPcScheduler(cosine, settings);
        dpm.SetTimesteps(12);
        unipc.SetTimesteps(12);
        var training = SigmaSpace.TrainingSigmas(cosine);
        var levels = SigmaSpace.KarrasSigmas(training[0], training[999], 12);
        var t = levels.Select(s => SigmaSpace.SigmaToT(s, training)).ToArray();
        CollectionAssert.AreEqual(t.Select(v => (int)Math.Truncate(v)).ToArray(), dpm.Timesteps.ToArray());
        CollectionAssert.AreEqual(t.Select(v => (int)Math.Round(v, MidpointRounding.ToEven)).ToArray(), unipc.Timesteps.ToArray());
        CollectionAssert.AreNotEqual(dpm.Timesteps.ToArray(), unipc.Timesteps.ToArray());
    }

    [TestMethod]
    [DataRow(10, true, FinalSigmasType.Zero, PredictionType.Epsilon)]
    [DataRow(20, true, FinalSigmasType.SigmaMin, PredictionType.VPrediction)]
    [DataRow(10, false, FinalSigmasType.Zero, PredictionType.Sample)]
    public void OracleLoopRecoversX0(int steps, bool karras, FinalSigmasType final, PredictionType prediction)
    {
        var sch = new DpmSolverMultistepScheduler(Linear, new MultistepSettings
        {
            ClipSample = false, Prediction = prediction, UseKarrasSigmas = karras, UseLuLambdas = !karras, FinalSigmasType = final,
        });
        // sigma_min ends at the noise level of t = 0 (s_0 = 0.01), so x stays within ~s_0 |eps| of x_0 there.
        Assert.IsLessThan(final == FinalSigmasType.Zero ? 1e-3 : 5e-2, OracleError(sch, steps, 80 + steps, prediction));
    }
}
