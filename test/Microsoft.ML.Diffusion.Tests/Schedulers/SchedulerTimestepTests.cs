using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

[TestClass]
public class SchedulerTimestepTests
{
    private static IEnumerable<IDiffusionScheduler> Schedulers(DiffusionSchedule s) =>
        new IDiffusionScheduler[] { new DdpmScheduler(s), new DdimScheduler(s), new DdimScheduler(s, eta: 1f) };

    [TestMethod]
    public void DefaultTimesteps_AreAllOfT_Descending()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        foreach (var sch in Schedulers(s))
        {
            Assert.HasCount(1000, sch.Timesteps);
            Assert.AreEqual(999, sch.Timesteps[0]);
            Assert.AreEqual(0, sch.Timesteps[^1]);
            Assert.AreEqual(998, sch.PreviousTimestep(999));
            Assert.AreEqual(-1, sch.PreviousTimestep(0));
        }
    }

    [TestMethod]
    public void SetTimesteps_50Of1000_IsLeading980To0()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        var expected = Enumerable.Range(0, 50).Select(i => 980 - 20 * i).ToArray();
        foreach (var sch in Schedulers(s))
        {
            sch.SetTimesteps(50);
            CollectionAssert.AreEqual(expected, sch.Timesteps.ToArray());
            Assert.AreEqual(960, sch.PreviousTimestep(980));
            Assert.AreEqual(-1, sch.PreviousTimestep(0));
            for (int i = 0; i + 1 < expected.Length; i++)
            {
                Assert.AreEqual(expected[i + 1], sch.PreviousTimestep(expected[i]));
            }

            // T / steps is integer division: 3 of 1000 gives 666, 333, 0.
            sch.SetTimesteps(3);
            CollectionAssert.AreEqual(new[] { 666, 333, 0 }, sch.Timesteps.ToArray());
            sch.SetTimesteps(1);
            CollectionAssert.AreEqual(new[] { 0 }, sch.Timesteps.ToArray());
            sch.SetTimesteps(1000);
            Assert.AreEqual(999, sch.Timesteps[0]);
        }
    }

    [TestMethod]
    public void SetTimesteps_OutOfRange_Throws()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Cosine, 100);
        foreach (var sch in Schedulers(s))
        {
            var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => sch.SetTimesteps(0));
            Assert.AreEqual("steps", e.ParamName);
            Assert.Contains("100", e.Message);
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => sch.SetTimesteps(101));
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => sch.PreviousTimestep(100));
            Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => sch.PreviousTimestep(-1));
        }
    }

    [TestMethod]
    public void Ddim_NegativeEta_Throws_AndNeedsNoiseFollowsEta()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 10);
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DdimScheduler(s, eta: -0.1f));
        Assert.AreEqual("eta", e.ParamName);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DdimScheduler(s, eta: float.NaN));
        Assert.IsFalse(new DdimScheduler(s).NeedsNoise);
        Assert.IsTrue(new DdimScheduler(s, eta: 0.5f).NeedsNoise);
        Assert.IsTrue(new DdpmScheduler(s).NeedsNoise);
        Assert.ThrowsExactly<ArgumentNullException>(() => new DdpmScheduler(null!));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DdpmScheduler(s, variance: (VarianceType)7));
    }

    [TestMethod]
    public void DdimEta1_SigmaSquared_IsDdpmPosteriorVariance()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        var ddim = new DdimScheduler(s, eta: 1f);
        var betas = Schedules.ReferenceSchedules.LinearBetas(1000);
        var abar = Schedules.ReferenceSchedules.AlphaBars(betas);
        for (int t = 0; t < 1000; t++)
        {
            double prev = t == 0 ? 1 : abar[t - 1];
            double betaTilde = (1 - prev) / (1 - abar[t]) * betas[t]; // DDPM eq. 7
            double sigma2 = ddim.Sigma(t) * ddim.Sigma(t);
            Assert.AreEqual(betaTilde, sigma2, 1e-12 + 1e-9 * betaTilde, $"t = {t}");
            Assert.AreEqual(s.PosteriorVariance[t], sigma2, 1e-12 + 1e-9 * betaTilde, $"t = {t}");
        }

        Assert.AreEqual(0.00979, ddim.Sigma(487) * ddim.Sigma(487), 5e-6);
        Assert.AreEqual(0.0, new DdimScheduler(s).Sigma(487));
    }
}
