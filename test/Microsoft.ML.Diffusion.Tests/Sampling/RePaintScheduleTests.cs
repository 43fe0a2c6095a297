using Microsoft.ML.Diffusion.Sampling;

namespace Microsoft.ML.Diffusion.Tests.Inpainting;

/// <summary>RePaint's jump schedule against lists computed with diffusers' RePaintScheduler.set_timesteps (Python, before scaling by T // steps).</summary>
[TestClass]
public class RePaintScheduleTests
{
    [TestMethod]
    public void JumpScheduleMatchesDiffusers()
    {
        // diffusers: set_timesteps(10, jump_length=3, jump_n_sample=2) with num_train_timesteps = 10.
        CollectionAssert.AreEqual(
            new[] { 9, 8, 7, 6, 7, 8, 9, 8, 7, 6, 5, 4, 3, 4, 5, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0 },
            RePaintSchedule.Jump(10, 3, 2));
        // set_timesteps(6, jump_length=2, jump_n_sample=3).
        CollectionAssert.AreEqual(
            new[] { 5, 4, 3, 2, 3, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1, 0 },
            RePaintSchedule.Jump(6, 2, 3));
        // No resampling, or a jump longer than the schedule: plain descending steps.
        CollectionAssert.AreEqual(new[] { 4, 3, 2, 1, 0 }, RePaintSchedule.Jump(5, 10, 10));
        CollectionAssert.AreEqual(Enumerable.Range(0, 10).Reverse().ToArray(), RePaintSchedule.Jump(10, 5, 1));
    }

    [TestMethod]
    public void RePaintDefaultsGiveDiffusersLengthAndCalls()
    {
        // RePaint's defaults (250 steps, j = 10, r = 10): diffusers' list has 4570 entries, 2410 of them denoising steps.
        var schedule = RePaintSchedule.Jump(250, 10, 10);
        Assert.AreEqual(4570, schedule.Length);
        Assert.AreEqual(2410, Descents(schedule));
        Assert.AreEqual(2410, RePaintSchedule.NetworkCalls(250, 10, 10));
        Assert.AreEqual(249, schedule[0]);
        Assert.AreEqual(0, schedule[^1]);
    }

    [TestMethod]
    public void NetworkCallFormulaCountsTheDescents()
    {
        foreach (var (s, j, r) in new[] { (10, 3, 2), (6, 2, 3), (50, 5, 5), (100, 10, 5), (7, 7, 3), (1, 1, 4), (33, 4, 1), (20, 1, 3) })
        {
            var schedule = RePaintSchedule.Jump(s, j, r);
            Assert.AreEqual(Descents(schedule), RePaintSchedule.NetworkCalls(s, j, r), $"steps {s}, j {j}, r {r}");
            // Every move is one level up or down, within [0, steps - 1].
            for (int i = 1; i < schedule.Length; i++) Assert.AreEqual(1, Math.Abs(schedule[i] - schedule[i - 1]));
            Assert.IsTrue(schedule.All(k => k >= 0 && k < s));
        }
    }

    [TestMethod]
    public void BadSettingsAreNamed()
    {
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => RePaintSchedule.Jump(10, 0, 2));
        Assert.AreEqual("jumpLength", e.ParamName);
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => RePaintSchedule.Jump(10, 2, 0));
        Assert.AreEqual("resamplings", e.ParamName);
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => RePaintSchedule.NetworkCalls(0, 2, 2));
        Assert.AreEqual("steps", e.ParamName);
    }

    /// <summary>Entries below the previous one (the first counts: it starts below steps).</summary>
    private static int Descents(int[] schedule)
    {
        int count = 0, previous = schedule[0] + 1;
        foreach (int k in schedule)
        {
            if (k < previous) count++;
            previous = k;
        }
        return count;
    }
}
