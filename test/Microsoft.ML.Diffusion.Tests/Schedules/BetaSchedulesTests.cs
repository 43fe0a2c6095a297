using Microsoft.ML.Diffusion.Schedules;

namespace Microsoft.ML.Diffusion.Tests.Schedules;

[TestClass]
public class BetaSchedulesTests
{
    [TestMethod]
    public void Linear_GoesFrom1em4To002_EvenlySpaced()
    {
        var b = BetaSchedules.Linear(1000);
        Assert.HasCount(1000, b);
        Assert.AreEqual(1e-4, b[0], 1e-15);
        Assert.AreEqual(0.02, b[^1], 1e-15);
        double step = (0.02 - 1e-4) / 999;
        for (int i = 1; i < b.Length; i++)
        {
            Assert.AreEqual(step, b[i] - b[i - 1], 1e-12);
        }
    }

    [TestMethod]
    public void Linear_IsNotRescaledForOtherT()
    {
        var b = BetaSchedules.Linear(10);
        Assert.HasCount(10, b);
        Assert.AreEqual(1e-4, b[0], 1e-15);
        Assert.AreEqual(0.02, b[^1], 1e-15);
        Assert.AreEqual(1e-4, BetaSchedules.Linear(1).Single(), 1e-15);
    }

    [TestMethod]
    public void Cosine_AlphaBarMatchesImprovedDdpmEq17()
    {
        const int T = 1000;
        var b = BetaSchedules.Cosine(T);
        Assert.HasCount(T, b);

        // f(t) = cos^2(((t/T) + s)/(1 + s) * pi/2), alpha_bar(t) = f(t)/f(0), written out again here.
        static double F(double u) => Math.Pow(Math.Cos((u + 0.008) / 1.008 * Math.PI / 2), 2);
        double abar = 1;
        for (int t = 1; t <= T; t++)
        {
            abar *= 1 - b[t - 1];
            if (b[t - 1] < 0.999)
            {
                double expected = F((double)t / T) / F(0);
                Assert.AreEqual(expected, abar, 1e-12 + 1e-9 * expected, $"alpha_bar at t = {t}");
            }
        }

        Assert.IsTrue(b.All(x => x > 0 && x <= 0.999), "betas in (0, 0.999]");
        for (int i = 1; i < T; i++)
        {
            Assert.IsGreaterThanOrEqualTo(b[i - 1], b[i], $"cosine betas must not decrease (t = {i})");
        }

        Assert.AreEqual(0.999, b[^1], 1e-15, "the last beta is clipped");
        // Improved DDPM: beta_1 is small, about 1 - f(1/T)/f(0) = 4.1e-5 for T = 1000.
        Assert.AreEqual(1 - F(1.0 / T) / F(0), b[0], 1e-15);
        Assert.IsLessThan(1e-4, b[0]);
    }

    [TestMethod]
    public void ScaledLinear_IsSquareOfLinspaceOfSquareRoots()
    {
        var b = BetaSchedules.ScaledLinear(1000);
        Assert.HasCount(1000, b);
        Assert.AreEqual(0.00085, b[0], 1e-15);
        Assert.AreEqual(0.012, b[^1], 1e-15);
        double step = (Math.Sqrt(0.012) - Math.Sqrt(0.00085)) / 999;
        for (int i = 1; i < b.Length; i++)
        {
            Assert.AreEqual(step, Math.Sqrt(b[i]) - Math.Sqrt(b[i - 1]), 1e-12);
            Assert.IsGreaterThan(b[i - 1], b[i]);
        }
    }

    [TestMethod]
    public void Sigmoid_FollowsLucidrainsFormula()
    {
        const int T = 1000;
        var b = BetaSchedules.Sigmoid(T);
        Assert.HasCount(T, b);
        static double S(double x) => 1 / (1 + Math.Exp(-x));
        double vs = S(-3), ve = S(3);
        double abar = 1;
        for (int t = 1; t <= T; t++)
        {
            abar *= 1 - b[t - 1];
            if (t < T)
            {
                double expected = (ve - S(6.0 * t / T - 3)) / (ve - vs);
                Assert.AreEqual(expected, abar, 1e-12 + 1e-9 * expected, $"alpha_bar at t = {t}");
            }
        }

        Assert.IsTrue(b.All(x => x > 0 && x <= 0.999));
        for (int i = 1; i < T; i++)
        {
            Assert.IsGreaterThanOrEqualTo(b[i - 1], b[i]);
        }

        Assert.AreEqual(0.999, b[^1], 1e-15, "alpha_bar(T) = 0 gives beta_T = 1, clipped");
        Assert.AreEqual(3.0028e-4, b[0], 1e-8);
    }

    [TestMethod]
    public void Create_DispatchesOnKind()
    {
        CollectionAssert.AreEqual(BetaSchedules.Linear(20), BetaSchedules.Create(NoiseSchedule.Linear, 20));
        CollectionAssert.AreEqual(BetaSchedules.Cosine(20), BetaSchedules.Create(NoiseSchedule.Cosine, 20));
        CollectionAssert.AreEqual(BetaSchedules.ScaledLinear(20), BetaSchedules.Create(NoiseSchedule.ScaledLinear, 20));
        CollectionAssert.AreEqual(BetaSchedules.Sigmoid(20), BetaSchedules.Create(NoiseSchedule.Sigmoid, 20));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => BetaSchedules.Create((NoiseSchedule)42, 20));
    }

    [TestMethod]
    public void InvalidArguments_ThrowWithClearMessages()
    {
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => BetaSchedules.Linear(0));
        Assert.AreEqual("timesteps", e.ParamName);
        Assert.Contains("at least 1", e.Message);
        Assert.Contains("got 0", e.Message);

        foreach (var kind in Enum.GetValues<NoiseSchedule>())
        {
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => BetaSchedules.Create(kind, -5));
        }

        Assert.AreEqual("betaStart", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => BetaSchedules.Linear(10, betaStart: 0)).ParamName);
        Assert.AreEqual("betaEnd", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => BetaSchedules.ScaledLinear(10, betaEnd: 1)).ParamName);
        Assert.AreEqual("s", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => BetaSchedules.Cosine(10, s: -0.1)).ParamName);
        Assert.AreEqual("maxBeta", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => BetaSchedules.Cosine(10, maxBeta: 1.5)).ParamName);
        Assert.AreEqual("tau", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => BetaSchedules.Sigmoid(10, tau: 0)).ParamName);
        Assert.AreEqual("end", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => BetaSchedules.Sigmoid(10, start: 3, end: 3)).ParamName);
        Assert.AreEqual("maxBeta", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => BetaSchedules.Sigmoid(10, maxBeta: double.NaN)).ParamName);
    }
}
