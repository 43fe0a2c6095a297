using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using static Microsoft.ML.Diffusion.Tests.Schedulers.MultistepReference;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>SDE-DPM-Solver++(2M) against a float64 recomputation of Lu et al. 2022's SDE solver (diffusers' sde-dpmsolver++), and oracle loops.</summary>
[TestClass]
public class DpmSolverSdeSchedulerTests
{
    private static readonly DiffusionSchedule Linear = new(NoiseSchedule.Linear, 1000);
    private static readonly double[] X = { 0.3, -0.8, 1.2, -0.1, 0.5, 0.9 };
    private static readonly double[] Eps = { 0.2, -1.1, 0.4, 0.7, -0.3, 1.5 };
    private static readonly double[] Eps2 = { -0.6, 0.9, 0.1, -1.4, 0.8, -0.2 };
    private static readonly double[] Z1 = { 1.3, -0.4, 0.05, -2.1, 0.6, 0.9 };
    private static readonly double[] Z2 = { -0.7, 0.2, 1.6, 0.3, -1.2, 0.4 };

    /// <summary>x_t = (sigma_t/sigma_s) e^{-h} x + alpha_t (1 - e^{-2h}) D + sigma_t sqrt(1 - e^{-2h}) z, h = lambda_t - lambda_s.</summary>
    private static double[] SdeUpdate(double[] x, double[] d, double[] z, double abarS, double abarT)
    {
        var (_, sigmaS, lambdaS) = Level(abarS);
        var (alphaT, sigmaT, lambdaT) = Level(abarT);
        double h = lambdaT - lambdaS;
        return x.Select((xi, k) => sigmaT / sigmaS * Math.Exp(-h) * xi + alphaT * (1 - Math.Exp(-2 * h)) * d[k]
                                   + sigmaT * Math.Sqrt(1 - Math.Exp(-2 * h)) * z[k]).ToArray();
    }

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void FirstAndSecondOrderStepsMatchTheSdeSolver(bool clip)
    {
        var sch = new DpmSolverSdeScheduler(Linear, new MultistepSettings { ClipSample = clip });
        sch.SetTimesteps(10);                                                     // trailing: 999, 899, 799, ...
        CollectionAssert.AreEqual(new[] { 999, 899, 799 }, sch.Timesteps.Take(3).ToArray());
        Assert.IsTrue(sch.NeedsNoise);
        double a0 = AlphaBarLinear[999], a1 = AlphaBarLinear[899], a2 = AlphaBarLinear[799];

        // Step 1, first order (SDE-DPM-Solver++1): D = x_theta(x, 999).
        var x0a = DataPrediction(X, Eps, a0).Select(v => clip ? Math.Clamp(v, -1, 1) : v).ToArray();
        var x1 = SdeUpdate(X, x0a, Z1, a0, a1);
        // Step 2, second order (2M, midpoint): D = (1 + 1/(2r)) x_theta(x1, 899) - 1/(2r) x_theta(x, 999), r = h_0/h_1.
        var x0b = DataPrediction(x1, Eps2, a1).Select(v => clip ? Math.Clamp(v, -1, 1) : v).ToArray();
        double r = (Level(a1).Lambda - Level(a0).Lambda) / (Level(a2).Lambda - Level(a1).Lambda);
        var d = x0b.Select((v, k) => (1 + 1 / (2 * r)) * v - 1 / (2 * r) * x0a[k]).ToArray();
        var x2 = SdeUpdate(x1, d, Z2, a1, a2);

        using var x = T32(X);
        using var e = T32(Eps);
        using var e2 = T32(Eps2);
        using var z1 = T32(Z1);
        using var z2 = T32(Z2);
        var s1 = sch.StepAt(0, e, x, z1);
        AssertClose(x1, s1.PrevSample, 1e-5, "step 1");
        AssertClose(x0a, s1.PredictedX0, 1e-5, "x0 of step 1");
        var s2 = sch.StepAt(1, e2, s1.PrevSample, z2);
        AssertClose(x2, s2.PrevSample, 1e-5, "step 2");

        // The noise really enters: another z gives another sample, by sigma_t sqrt(1 - e^{-2h}) (z' - z).
        sch.SetTimesteps(10);
        using var zero = zeros(1, 1, 2, 3);
        using var noiseless = sch.StepAt(0, e, x, zero).PrevSample;
        var (_, sigma1, lambda1) = Level(a1);
        double noiseCoef = sigma1 * Math.Sqrt(1 - Math.Exp(-2 * (lambda1 - Level(a0).Lambda)));
        AssertClose(x1.Select((v, k) => v - noiseCoef * Z1[k]).ToArray(), noiseless, 1e-5, "without noise");
        Assert.IsGreaterThan(0.1, noiseCoef);
        foreach (var t in new[] { s1.PrevSample, s1.PredictedX0, s2.PrevSample, s2.PredictedX0 }) t.Dispose();
    }

    [TestMethod]
    public void LastStepLandsOnTheDataPrediction_WithoutNoise()
    {
        var sch = new DpmSolverSdeScheduler(Linear, new MultistepSettings { ClipSample = false });
        sch.SetTimesteps(10);
        using var x = T32(X);
        using var e = T32(Eps);
        using var y = sch.Step(e, 99, x, noise: null);                          // the last timestep: onto sigma = 0, no noise needed
        AssertClose(DataPrediction(X, Eps, AlphaBarLinear[99]), y, 1e-5);
    }

    [TestMethod]
    public void MissingNoiseIsRejectedNamingTheSampler()
    {
        var sch = new DpmSolverSdeScheduler(Linear, new MultistepSettings());
        sch.SetTimesteps(10);
        using var x = T32(X);
        var ex = Assert.ThrowsExactly<ArgumentNullException>(() => sch.StepAt(0, x, x));
        StringAssert.Contains(ex.Message, DpmSolverSdeScheduler.DisplayName);
    }

    [TestMethod]
    [DataRow(10, false, false, PredictionType.Epsilon)]
    [DataRow(25, false, false, PredictionType.VPrediction)]
    [DataRow(10, true, false, PredictionType.Epsilon)]
    [DataRow(15, false, true, PredictionType.Sample)]
    public void OracleLoopRecoversX0(int steps, bool karras, bool lu, PredictionType prediction)
    {
        var sch = new DpmSolverSdeScheduler(Linear, new MultistepSettings
        {
            ClipSample = false, Prediction = prediction, UseKarrasSigmas = karras, UseLuLambdas = lu,
        });
        Assert.IsLessThan(1e-3, OracleError(sch, steps, 40 + steps, prediction));
    }
}
