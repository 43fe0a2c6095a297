using BenchmarkDotNet.Attributes;
using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Benchmarks;

/// <summary>One update of each sampler on a batch of 64 28x28 images (the network's output is given), and DPM-Solver++'s
/// 20-step loop, whose multistep state makes a single step unrepresentative.</summary>
[MemoryDiagnoser]
public class SchedulerBenchmarks
{
    private DiffusionSchedule _schedule = null!;
    private DdpmScheduler _ddpm = null!;
    private DdimScheduler _ddim = null!;
    private Tensor _x = null!, _eps = null!, _noise = null!;

    [GlobalSetup]
    public void Setup()
    {
        // One thread: these element-wise ops on 50k values are split over threads otherwise, and on a busy 2-core machine the
        // OpenMP fork/join then dominates (tens of ms per op); one thread measures the scheduler's own work.
        torch.set_num_threads(1);
        manual_seed(0);
        _schedule = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        _ddpm = new DdpmScheduler(_schedule);
        _ddim = new DdimScheduler(_schedule);
        _ddim.SetTimesteps(50);
        _x = randn(64, 1, 28, 28);
        _eps = randn(64, 1, 28, 28);
        _noise = randn(64, 1, 28, 28);
    }

    [Benchmark]
    public void DdpmStep()
    {
        using var scope = NewDisposeScope();
        _ddpm.Step(_eps, 500, _x, _noise);
    }

    [Benchmark]
    public void DdimStep()
    {
        using var scope = NewDisposeScope();
        _ddim.Step(_eps, _ddim.Timesteps[25], _x);
    }

    [Benchmark]
    public void DpmSolverPlusPlus20Steps()
    {
        using var scope = NewDisposeScope();
        var solver = new DpmSolverMultistepScheduler(_schedule);
        solver.SetTimesteps(20);
        var x = _x;
        foreach (int t in solver.Timesteps)
            x = solver.Step(_eps, t, x);
        (solver as IDisposable)?.Dispose();
    }

    [Benchmark]
    public void AddNoise()
    {
        using var scope = NewDisposeScope();
        using var t = full(new long[] { 64 }, 500L, dtype: int64);
        _schedule.AddNoise(_x, _eps, t);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _x.Dispose();
        _eps.Dispose();
        _noise.Dispose();
    }
}
