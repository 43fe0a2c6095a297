using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>
/// Timestep lists of each <see cref="TimestepSpacing"/> (Lin et al. 2024, table 2), written out as numpy computes
/// diffusers' lists (round half to even), and the "previous timestep = next list element" rule.
/// </summary>
[TestClass]
public class TimestepSpacingTests
{
    private static IDiffusionScheduler[] AllSchedulers(DiffusionSchedule s, TimestepSpacing spacing) => new IDiffusionScheduler[]
    {
        new DdpmScheduler(s, spacing: spacing),
        new DdimScheduler(s, spacing: spacing),
        new DpmSolverMultistepScheduler(s, spacing: spacing),
    };

    public static IEnumerable<object[]> Lists => new[]
    {
        // T = 1000, S = 10: leading = arange(0, 10) * 100 reversed; trailing = round(arange(1000, 0, -100)) - 1;
        // linspace = round(linspace(0, 999, 10)) reversed (step 111).
        new object[] { 1000, 10, TimestepSpacing.Leading, new[] { 900, 800, 700, 600, 500, 400, 300, 200, 100, 0 } },
        new object[] { 1000, 10, TimestepSpacing.Trailing, new[] { 999, 899, 799, 699, 599, 499, 399, 299, 199, 99 } },
        new object[] { 1000, 10, TimestepSpacing.Linspace, new[] { 999, 888, 777, 666, 555, 444, 333, 222, 111, 0 } },
        // T = 1000, S = 3: 1000 // 3 = 333; 1000 - 333.33.. = 666.67 -> 667; linspace middle 499.5 -> 500.
        new object[] { 1000, 3, TimestepSpacing.Leading, new[] { 666, 333, 0 } },
        new object[] { 1000, 3, TimestepSpacing.Trailing, new[] { 999, 666, 332 } },
        new object[] { 1000, 3, TimestepSpacing.Linspace, new[] { 999, 500, 0 } },
        // Round half to even: arange(6, 0, -1.5) = 6, 4.5, 3, 1.5 -> 6, 4, 3, 2; linspace(0, 5, 3) = 0, 2.5, 5 -> 0, 2, 5.
        new object[] { 6, 4, TimestepSpacing.Trailing, new[] { 5, 3, 2, 1 } },
        new object[] { 6, 3, TimestepSpacing.Linspace, new[] { 5, 2, 0 } },
        new object[] { 6, 4, TimestepSpacing.Leading, new[] { 3, 2, 1, 0 } },
        // One step.
        new object[] { 1000, 1, TimestepSpacing.Leading, new[] { 0 } },
        new object[] { 1000, 1, TimestepSpacing.Trailing, new[] { 999 } },
        new object[] { 1000, 1, TimestepSpacing.Linspace, new[] { 0 } },
    };

    [TestMethod]
    [DynamicData(nameof(Lists))]
    public void SetTimesteps_GivesTheSpacingsList_AndSteps_GoToTheNextElement(int T, int steps, TimestepSpacing spacing, int[] expected)
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, T);
        foreach (var sch in AllSchedulers(s, spacing))
        {
            sch.SetTimesteps(steps);
            CollectionAssert.AreEqual(expected, sch.Timesteps.ToArray(), $"{sch.GetType().Name} {spacing}");
            for (int i = 0; i < expected.Length; i++)
            {
                Assert.AreEqual(i + 1 < expected.Length ? expected[i + 1] : -1, sch.PreviousTimestep(expected[i]));
            }
        }
    }

    [TestMethod]
    public void AllSpacings_WithSEqualT_VisitEveryTimestep()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 50);
        var all = Enumerable.Range(0, 50).Reverse().ToArray();
        foreach (var spacing in Enum.GetValues<TimestepSpacing>())
        {
            foreach (var sch in AllSchedulers(s, spacing))
            {
                CollectionAssert.AreEqual(all, sch.Timesteps.ToArray(), "before SetTimesteps");
                sch.SetTimesteps(50);
                CollectionAssert.AreEqual(all, sch.Timesteps.ToArray());
            }
        }
    }

    [TestMethod]
    public void PreviousTimestep_OffTheList_IsTheNextListedTimestepBelow()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        var ddim = new DdimScheduler(s, spacing: TimestepSpacing.Trailing);
        ddim.SetTimesteps(10);
        Assert.AreEqual(499, ddim.PreviousTimestep(500));
        Assert.AreEqual(899, ddim.PreviousTimestep(998));
        Assert.AreEqual(-1, ddim.PreviousTimestep(99));
        Assert.AreEqual(-1, ddim.PreviousTimestep(50));
        var ddpm = new DdpmScheduler(s); // leading
        ddpm.SetTimesteps(10);
        Assert.AreEqual(900, ddpm.PreviousTimestep(999));
        Assert.AreEqual(0, ddpm.PreviousTimestep(50));
    }

    [TestMethod]
    public void Defaults_AndUnknownSpacing()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 100);
        Assert.AreEqual(TimestepSpacing.Leading, new DdpmScheduler(s).Spacing);
        Assert.AreEqual(TimestepSpacing.Leading, new DdimScheduler(s).Spacing);
        Assert.AreEqual(TimestepSpacing.Trailing, new DpmSolverMultistepScheduler(s).Spacing);
        var bad = (TimestepSpacing)9;
        Assert.AreEqual("spacing", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DdpmScheduler(s, spacing: bad)).ParamName);
        Assert.AreEqual("spacing", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DdimScheduler(s, spacing: bad)).ParamName);
        Assert.AreEqual("spacing", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DpmSolverMultistepScheduler(s, spacing: bad)).ParamName);
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DpmSolverMultistepScheduler(s).SetTimesteps(101));
        Assert.AreEqual("steps", e.ParamName);
    }
}
