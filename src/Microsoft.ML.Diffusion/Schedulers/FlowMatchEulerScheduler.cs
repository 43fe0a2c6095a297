using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// Euler's method on the rectified-flow ODE dx/dsigma = v (diffusers' FlowMatchEulerDiscreteScheduler, shift 1; Liu et al. 2023,
/// section 2.1; the sampler of Stable Diffusion 3): x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v(x_i, sigma_i) over sigma_i =
/// linspace(1, 1/T, n), then 0. Deterministic, one network call per step. A straight path is integrated exactly: when the
/// network returns the true velocity eps - x_0, every step stays on the line and the last lands on x_0.
/// </summary>
internal sealed class FlowMatchEulerScheduler : FlowMatchScheduler
{
    private double[] _sigmas = Array.Empty<double>();

    /// <summary>Creates the sampler over the model's <paramref name="schedule"/> (its T only) with 28 steps (or T) until
    /// <see cref="FlowMatchScheduler.SetTimesteps"/> is called.</summary>
    public FlowMatchEulerScheduler(DiffusionSchedule schedule) : base(schedule) => SetTimesteps(Math.Min(28, schedule.Timesteps));

    /// <summary>The name in messages and in the sampler registry.</summary>
    public const string DisplayName = "Flow matching Euler";

    /// <inheritdoc/>
    public override string Name => DisplayName;

    /// <summary>sigma_0 = 1 &gt; ... &gt; sigma_{n-1} = 1/T &gt; sigma_n = 0.</summary>
    public IReadOnlyList<double> Sigmas => _sigmas;

    /// <inheritdoc/>
    protected override void Build(int steps)
    {
        _sigmas = FlowSigmas(Schedule.Timesteps, steps);
        SetLoop(_sigmas[..^1]);
    }

    /// <summary>diffusers' step: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v; x0_hat = x_i - sigma_i v.</summary>
    /// <inheritdoc/>
    public override SchedulerOutput StepAt(int index, Tensor modelOutput, Tensor sample, Tensor? noise = null)
    {
        var v = Velocity(modelOutput, sample);
        if (index < 0 || index >= Timesteps.Count)
            throw new ArgumentOutOfRangeException(nameof(index), index, $"The loop position must lie between 0 and {Timesteps.Count - 1}.");
        double sigma = _sigmas[index], next = _sigmas[index + 1];
        using var scope = NewDisposeScope();
        var prev = SchedulerCore.Combine(1.0, sample, next - sigma, v);
        var x0 = PredictedX0(sample, v, sigma);
        return new SchedulerOutput(prev.MoveToOuterDisposeScope(), x0.MoveToOuterDisposeScope());
    }
}
