using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Tests.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>
/// Whole sampling loops: DPM-Solver++ and DDIM under each spacing with an oracle model (exact epsilon for a known x_0,
/// as in <see cref="OracleSamplingTests"/>), DPM-Solver++'s state across loops, and the factory / settings plumbing.
/// </summary>
[TestClass]
public class DpmSolverSamplingTests
{
    private static readonly long[] Shape = { 2, 1, 8, 8 };
    private static readonly double[] AlphaBarLinear = ReferenceSchedules.AlphaBars(ReferenceSchedules.LinearBetas(1000));

    /// <summary>Runs a loop from seeded Gaussian noise; <paramref name="model"/> maps (x_t, t) to epsilon.</summary>
    private static Tensor Loop(IDiffusionScheduler sch, Func<Tensor, int, Tensor> model, long seed, int stopAfter = int.MaxValue)
    {
        using var gen = new TorchSharp.torch.Generator((ulong)seed);
        var x = randn(Shape, generator: gen);
        int n = 0;
        foreach (int t in sch.Timesteps)
        {
            if (n++ == stopAfter)
            {
                break;
            }

            using var scope = NewDisposeScope();
            var noise = sch.NeedsNoise ? randn(Shape, generator: gen) : null;
            var next = sch.Step(model(x, t), t, x, noise).MoveToOuterDisposeScope();
            x.Dispose();
            x = next;
        }

        return x;
    }

    /// <summary>max |x - x_0| after a loop whose model returns the epsilon that x_t and the known x_0 imply (DDPM eq. 4 solved for eps).</summary>
    private static double OracleError(IDiffusionScheduler sch, int steps, long seed)
    {
        sch.SetTimesteps(steps);
        using var gen = new TorchSharp.torch.Generator((ulong)(seed + 1000));
        using var x0 = randn(Shape, generator: gen).clamp(-1, 1);
        using var x = Loop(sch, (xt, t) => (xt - x0 * Math.Sqrt(AlphaBarLinear[t])) / Math.Sqrt(1 - AlphaBarLinear[t]), seed);
        using var err = (x - x0).abs().max();
        return err.item<float>();
    }

    [TestMethod]
    [DataRow(10, TimestepSpacing.Trailing)]
    [DataRow(20, TimestepSpacing.Trailing)]
    [DataRow(10, TimestepSpacing.Linspace)]
    [DataRow(20, TimestepSpacing.Leading)]
    public void DpmSolverPlusPlus_Oracle_RecoversX0(int steps, TimestepSpacing spacing)
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        Assert.IsLessThan(1e-3, OracleError(new DpmSolverMultistepScheduler(s, spacing: spacing), steps, steps));
        Assert.IsLessThan(1e-3, OracleError(new DpmSolverMultistepScheduler(s, clipSample: false, spacing: spacing), steps, steps + 1));
    }

    [TestMethod]
    [DataRow(TimestepSpacing.Leading)]
    [DataRow(TimestepSpacing.Trailing)]
    [DataRow(TimestepSpacing.Linspace)]
    public void Ddim_Oracle_RecoversX0_UnderEachSpacing(TimestepSpacing spacing)
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        Assert.IsLessThan(1e-3, OracleError(new DdimScheduler(s, 0f, spacing: spacing), 10, 7));
        Assert.IsLessThan(1e-3, OracleError(new DdimScheduler(s, 1f, spacing: spacing), 10, 8));
    }

    private static bool Same(Tensor a, Tensor b)
    {
        using var d = (a - b).abs().max();
        return d.item<float>() == 0f;
    }

    /// <summary>A smooth non-oracle model, so that consecutive x_0 predictions differ and the second-order term matters.</summary>
    private static Tensor ToyModel(Tensor x, int t) => x.tanh() * (0.5 + t / 2000.0) + 0.1;

    [TestMethod]
    public void SetTimesteps_ResetsState_SoRepeatedLoopsAgree()
    {
        var sch = new DpmSolverMultistepScheduler(new DiffusionSchedule(NoiseSchedule.Linear, 1000));
        sch.SetTimesteps(8);
        using var first = Loop(sch, ToyModel, 3);

        sch.SetTimesteps(8);
        using var again = Loop(sch, ToyModel, 3);
        Assert.IsTrue(Same(first, again), "same loop after SetTimesteps");

        // An interrupted loop leaves a prediction behind; SetTimesteps forgets it.
        using (Loop(sch, ToyModel, 5, stopAfter: 4)) { }
        sch.SetTimesteps(8);
        using var afterInterrupt = Loop(sch, ToyModel, 3);
        Assert.IsTrue(Same(first, afterInterrupt), "after an interrupted loop and SetTimesteps");

        // Starting again at the first timestep also starts first order, even without SetTimesteps.
        using var noReset = Loop(sch, ToyModel, 3);
        Assert.IsTrue(Same(first, noReset), "a second loop without SetTimesteps");

        // The state does matter: a fresh scheduler with the same settings agrees, a first-order-only run does not.
        var fresh = new DpmSolverMultistepScheduler(new DiffusionSchedule(NoiseSchedule.Linear, 1000));
        fresh.SetTimesteps(8);
        using var freshRun = Loop(fresh, ToyModel, 3);
        Assert.IsTrue(Same(first, freshRun));
        using var firstOrderOnly = Loop(new ResetEveryStep(fresh), ToyModel, 3);
        using var diff = (first - firstOrderOnly).abs().max();
        Assert.IsGreaterThan(1e-4, diff.item<float>());
    }

    /// <summary>Forgets the previous prediction before every step: DPM-Solver++1 (DDIM) on the same timesteps.</summary>
    private sealed class ResetEveryStep(DpmSolverMultistepScheduler inner) : IDiffusionScheduler
    {
        public DiffusionSchedule Schedule => inner.Schedule;
        public IReadOnlyList<int> Timesteps => inner.Timesteps;
        public bool NeedsNoise => false;
        public void SetTimesteps(int steps) => inner.SetTimesteps(steps);
        public int PreviousTimestep(int timestep) => inner.PreviousTimestep(timestep);
        public Tensor AddNoise(Tensor x0, Tensor noise, Tensor timesteps) => inner.AddNoise(x0, noise, timesteps);
        public Tensor AddNoiseAt(Tensor x0, Tensor noise, int index) => inner.AddNoiseAt(x0, noise, index);

        public Tensor Step(Tensor modelOutput, int timestep, Tensor sample, Tensor? noise = null)
        {
            inner.Reset();
            return inner.Step(modelOutput, timestep, sample, noise);
        }
    }

    [TestMethod]
    public void SchedulerFactory_BuildsDpmSolverPlusPlus_WithTheRequestedStepsAndSpacing()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        var dpm = SchedulerFactory.Create(s, new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlus, Steps = 12, ClipSample = false });
        Assert.IsInstanceOfType<DpmSolverMultistepScheduler>(dpm);
        var typed = (DpmSolverMultistepScheduler)dpm;
        Assert.HasCount(12, dpm.Timesteps);
        Assert.AreEqual(TimestepSpacing.Trailing, typed.Spacing);
        Assert.IsFalse(typed.ClipSample);
        Assert.AreEqual(999, dpm.Timesteps[0]);

        var linspace = SchedulerFactory.Create(s, new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlus, Steps = 10, Spacing = TimestepSpacing.Linspace });
        CollectionAssert.AreEqual(new[] { 999, 888, 777, 666, 555, 444, 333, 222, 111, 0 }, linspace.Timesteps.ToArray());

        var byDefault = SchedulerFactory.Create(s, new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlus });
        Assert.HasCount(20, byDefault.Timesteps);

        // Spacing reaches DDPM and DDIM too; null keeps their leading default.
        var ddim = (DdimScheduler)SchedulerFactory.Create(s, new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 10, Spacing = TimestepSpacing.Trailing });
        Assert.AreEqual(TimestepSpacing.Trailing, ddim.Spacing);
        Assert.AreEqual(999, ddim.Timesteps[0]);
        var ddpm = (DdpmScheduler)SchedulerFactory.Create(s, new SamplerOptions { Sampler = SamplerKind.Ddpm, Steps = 10 });
        Assert.AreEqual(TimestepSpacing.Leading, ddpm.Spacing);
        Assert.AreEqual(900, ddpm.Timesteps[0]);

        var bad = new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlus, Spacing = (TimestepSpacing)7 };
        Assert.AreEqual("Spacing", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => SchedulerFactory.Create(s, bad)).ParamName);
    }

    [TestMethod]
    public void SamplerSettings_CarrySpacing_ThroughJson()
    {
        var options = new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlus, Steps = 15, Spacing = TimestepSpacing.Linspace };
        var config = new DiffusionModelConfig { Network = new Microsoft.ML.Diffusion.UNetConfig(), DefaultSampler = options.ToSettings() };
        var back = DiffusionModelConfig.FromJson(config.ToJson()).DefaultSampler.ToOptions();
        Assert.AreEqual(SamplerKind.DpmSolverPlusPlus, back.Sampler);
        Assert.AreEqual(15, back.Steps);
        Assert.AreEqual(TimestepSpacing.Linspace, back.Spacing);
        Assert.Contains("\"Spacing\":\"Linspace\"", config.ToJson());

        // Configs written before Spacing existed read as null (the sampler's default).
        var old = config.ToJson().Replace(",\"Spacing\":\"Linspace\"", string.Empty);
        Assert.IsNull(DiffusionModelConfig.FromJson(old).DefaultSampler.Spacing);
    }
}
