using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using static Microsoft.ML.Diffusion.Tests.Schedulers.MultistepReference;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>
/// UniPC (bh2, order 2, data prediction) against a float64 recomputation written in the general order-p form of Zhao et al. 2023
/// (rk ratios, the matrix R_p(h) of powers of r_k, the vector of phi-function coefficients over B(h), a linear solve), and oracle loops.
/// </summary>
[TestClass]
public class UniPcSchedulerTests
{
    private static readonly DiffusionSchedule Linear = new(NoiseSchedule.Linear, 1000);
    private static readonly double[] X = { 0.3, -0.8, 1.2, -0.1, 0.5, 0.9 };
    private static readonly double[][] Eps =
    {
        new[] { 0.2, -1.1, 0.4, 0.7, -0.3, 1.5 },
        new[] { -0.6, 0.9, 0.1, -1.4, 0.8, -0.2 },
        new[] { 0.5, 0.3, -0.9, 0.2, 1.1, -0.7 },
        new[] { -0.1, 0.6, 0.8, -0.5, -0.4, 0.3 },
    };

    /// <summary>
    /// One UniP (corrector = false) or UniC (corrector = true) update in the general form: from level s (with data prediction m_s and
    /// earlier ones ms[k], levels ls[k]) to level t; for the corrector, mt is the prediction at t. Order p uses p - 1 earlier predictions.
    /// </summary>
    private static double[] Update(double[] x, double abarS, double abarT, double[] mS, (double Abar, double[] M)[] earlier, int p, double[]? mT)
    {
        var (_, sigmaS, lambdaS) = Level(abarS);
        var (alphaT, sigmaT, lambdaT) = Level(abarT);
        double h = lambdaT - lambdaS, hh = -h;
        double phi1 = Math.Exp(hh) - 1, bh = Math.Exp(hh) - 1;
        int k = earlier.Length;                                                   // p - 1 earlier points (predictor), likewise for the corrector
        var rks = earlier.Select(e => (Level(e.Abar).Lambda - lambdaS) / h).Append(1.0).ToArray();
        var d1s = earlier.Select((e, j) => e.M.Select((v, n) => (v - mS[n]) / rks[j]).ToArray()).ToArray();
        // b_i = h phi_{i}(hh) i! / B(h), from h_phi_k = h_phi_1/hh - 1, then h_phi_k/hh - 1/(k+1)!.
        var b = new double[p];
        double hPhiK = phi1 / hh - 1, factorial = 1;
        for (int i = 1; i <= p; i++)
        {
            b[i - 1] = hPhiK * factorial / bh;
            factorial *= i + 1;
            hPhiK = hPhiK / hh - 1 / factorial;
        }

        double[] rhos;
        if (mT is null)
            rhos = k == 0 ? Array.Empty<double>() : p == 2 ? new[] { 0.5 } : Solve(Powers(rks[..k], p - 1), b[..(p - 1)]);
        else
            rhos = p == 1 ? new[] { 0.5 } : Solve(Powers(rks, p), b);
        return x.Select((xi, n) =>
        {
            double res = 0;
            for (int j = 0; j < k; j++) res += rhos[j] * d1s[j][n];
            if (mT is not null) res += rhos[^1] * (mT[n] - mS[n]);
            return sigmaT / sigmaS * xi - alphaT * phi1 * mS[n] - alphaT * bh * res;
        }).ToArray();
    }

    private static double[,] Powers(double[] r, int rows)
    {
        var m = new double[rows, r.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < r.Length; j++)
                m[i, j] = Math.Pow(r[j], i);
        return m;
    }

    /// <summary>Gaussian elimination with partial pivoting for the small square system a x = b.</summary>
    private static double[] Solve(double[,] a, double[] b)
    {
        int n = b.Length;
        var m = (double[,])a.Clone();
        var y = (double[])b.Clone();
        for (int c = 0; c < n; c++)
        {
            int piv = Enumerable.Range(c, n - c).MaxBy(r => Math.Abs(m[r, c]));
            for (int j = 0; j < n; j++) (m[c, j], m[piv, j]) = (m[piv, j], m[c, j]);
            (y[c], y[piv]) = (y[piv], y[c]);
            for (int r = c + 1; r < n; r++)
            {
                double f = m[r, c] / m[c, c];
                for (int j = c; j < n; j++) m[r, j] -= f * m[c, j];
                y[r] -= f * y[c];
            }
        }

        var sol = new double[n];
        for (int r = n - 1; r >= 0; r--)
        {
            double s = y[r];
            for (int j = r + 1; j < n; j++) s -= m[r, j] * sol[j];
            sol[r] = s / m[r, r];
        }

        return sol;
    }

    [TestMethod]
    public void FourStepsMatchThePredictorCorrectorRecomputation()
    {
        var sch = new UniPcScheduler(Linear, new MultistepSettings { ClipSample = false });
        sch.SetTimesteps(10);                                                     // 999, 899, ..., 99 (trailing)
        var ab = sch.Timesteps.Select(t => AlphaBarLinear[t]).ToArray();

        // Position 0: predictor of order 1 (DDIM).
        var m0 = DataPrediction(X, Eps[0], ab[0]);
        var x1 = Update(X, ab[0], ab[1], m0, Array.Empty<(double, double[])>(), 1, null);
        // Position 1: corrector of order 1 (rho_c = 1/2) with m1, then predictor of order 2 (rho_p = 1/2).
        var m1 = DataPrediction(x1, Eps[1], ab[1]);
        var x1c = Update(X, ab[0], ab[1], m0, Array.Empty<(double, double[])>(), 1, m1);
        var x2 = Update(x1c, ab[1], ab[2], m1, new[] { (ab[0], m0) }, 2, null);
        // Position 2: corrector of order 2 (solve [[1, 1], [r1, 1]] rho = b), then predictor of order 2.
        var m2 = DataPrediction(x2, Eps[2], ab[2]);
        var x2c = Update(x1c, ab[1], ab[2], m1, new[] { (ab[0], m0) }, 2, m2);
        var x3 = Update(x2c, ab[2], ab[3], m2, new[] { (ab[1], m1) }, 2, null);
        // Position 3 likewise.
        var m3 = DataPrediction(x3, Eps[3], ab[3]);
        var x3c = Update(x2c, ab[2], ab[3], m2, new[] { (ab[1], m1) }, 2, m3);
        var x4 = Update(x3c, ab[3], ab[4], m3, new[] { (ab[2], m2) }, 2, null);

        var expected = new[] { x1, x2, x3, x4 };
        var x = T32(X);
        for (int i = 0; i < 4; i++)
        {
            using var e = T32(Eps[i]);
            var step = sch.StepAt(i, e, x);
            AssertClose(expected[i], step.PrevSample, 1e-5, $"position {i}");
            step.PredictedX0.Dispose();
            x.Dispose();
            x = step.PrevSample;
        }

        // The corrector matters: without it (a fresh loop at each step) position 1 lands elsewhere.
        Assert.IsGreaterThan(1e-3, x1c.Zip(x1, (a, b) => Math.Abs(a - b)).Max());
        x.Dispose();
    }

    [TestMethod]
    [DataRow(FinalSigmasType.Zero, true)]
    [DataRow(FinalSigmasType.Zero, false)]
    [DataRow(FinalSigmasType.SigmaMin, true)]
    [DataRow(FinalSigmasType.SigmaMin, false)]
    public void LastStep_FollowsFinalSigmasTypeAndLowerOrderFinal(FinalSigmasType final, bool lowerOrderFinal)
    {
        var sch = new UniPcScheduler(Linear, new MultistepSettings { ClipSample = false, FinalSigmasType = final, LowerOrderFinal = lowerOrderFinal });
        sch.SetTimesteps(3);                                                      // 999, 666, 332 (trailing); then 0 or alpha_bar_0
        var ab = sch.Timesteps.Select(t => AlphaBarLinear[t]).Append(final == FinalSigmasType.Zero ? 1.0 : AlphaBarLinear[0]).ToArray();
        var m0 = DataPrediction(X, Eps[0], ab[0]);
        var x1 = Update(X, ab[0], ab[1], m0, Array.Empty<(double, double[])>(), 1, null);
        var m1 = DataPrediction(x1, Eps[1], ab[1]);
        var x1c = Update(X, ab[0], ab[1], m0, Array.Empty<(double, double[])>(), 1, m1);
        var x2 = Update(x1c, ab[1], ab[2], m1, new[] { (ab[0], m0) }, 2, null);
        var m2 = DataPrediction(x2, Eps[2], ab[2]);
        var x2c = Update(x1c, ab[1], ab[2], m1, new[] { (ab[0], m0) }, 2, m2);
        // Last step: onto sigma = 0 it is m2 itself; onto alpha_bar_0 it is first order with lower_order_final, else second order.
        var last = final == FinalSigmasType.Zero ? m2
            : Update(x2c, ab[2], ab[3], m2, lowerOrderFinal ? Array.Empty<(double, double[])>() : new[] { (ab[1], m1) }, lowerOrderFinal ? 1 : 2, null);

        var x = T32(X);
        for (int i = 0; i < 3; i++)
        {
            using var e = T32(Eps[i]);
            var step = sch.StepAt(i, e, x);
            if (i == 2) AssertClose(last, step.PrevSample, 1e-5, "last step");
            if (!ReferenceEquals(step.PredictedX0, step.PrevSample)) step.PredictedX0.Dispose();
            x.Dispose();
            x = step.PrevSample;
        }

        x.Dispose();
    }

    [TestMethod]
    [DataRow(5, false, PredictionType.Epsilon)]
    [DataRow(10, false, PredictionType.VPrediction)]
    [DataRow(10, true, PredictionType.Epsilon)]
    [DataRow(20, true, PredictionType.Sample)]
    public void OracleLoopRecoversX0(int steps, bool karras, PredictionType prediction)
    {
        var sch = new UniPcScheduler(Linear, new MultistepSettings { ClipSample = false, Prediction = prediction, UseKarrasSigmas = karras });
        Assert.IsLessThan(1e-3, OracleError(sch, steps, 60 + steps, prediction));
    }

    [TestMethod]
    public void KarrasWithSigmaMin_LastStepBetweenEqualLevelsReturnsTheCorrectedSample()
    {
        // The Karras list ends at s_0, the level "sigma_min" lands on: a predictor step of h = 0, which returns its (corrected) input.
        var sch = new UniPcScheduler(Linear, new MultistepSettings { ClipSample = false, UseKarrasSigmas = true, FinalSigmasType = FinalSigmasType.SigmaMin });
        sch.SetTimesteps(4);
        var ab = sch.AlphaBars.ToArray();
        Assert.AreEqual(ab[3], ab[4]);
        var none = Array.Empty<(double, double[])>();
        var m0 = DataPrediction(X, Eps[0], ab[0]);
        var x1 = Update(X, ab[0], ab[1], m0, none, 1, null);
        var m1 = DataPrediction(x1, Eps[1], ab[1]);
        var x1c = Update(X, ab[0], ab[1], m0, none, 1, m1);
        var x2 = Update(x1c, ab[1], ab[2], m1, new[] { (ab[0], m0) }, 2, null);
        var m2 = DataPrediction(x2, Eps[2], ab[2]);
        var x2c = Update(x1c, ab[1], ab[2], m1, new[] { (ab[0], m0) }, 2, m2);
        var x3 = Update(x2c, ab[2], ab[3], m2, new[] { (ab[1], m1) }, 2, null);
        var m3 = DataPrediction(x3, Eps[3], ab[3]);
        var x3c = Update(x2c, ab[2], ab[3], m2, new[] { (ab[1], m1) }, 2, m3);

        var x = T32(X);
        for (int i = 0; i < 4; i++)
        {
            using var e = T32(Eps[i]);
            var step = sch.StepAt(i, e, x);
            step.PredictedX0.Dispose();
            x.Dispose();
            x = step.PrevSample;
        }

        AssertClose(x3c, x, 1e-5, "last step");
        x.Dispose();
    }
}
