using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// Heun's second-order method on the rectified-flow ODE dx/dsigma = v (diffusers' FlowMatchHeunDiscreteScheduler, shift 1; Karras et
/// al. 2022, Algorithm 1, with the velocity as the derivative): deterministic; n steps over sigma_i = linspace(1, 1/T, n), then 0, take
/// 2n - 1 network calls (<see cref="Order"/> 2), the last step being Euler's.
/// </summary>
/// <remarks>
/// <para>Loop positions (diffusers' interleaved timesteps t_0, t_1, t_1, ..., t_{n-1}, t_{n-1}): position 0 and every even position 2i
/// are Euler predictors from sigma_i to sigma_{i+1}: x' = x_i + (sigma_{i+1} - sigma_i) v_i; each odd position 2i + 1 is the correction
/// with the velocity v' at (x', sigma_{i+1}): x_{i+1} = x_i + (sigma_{i+1} - sigma_i)(v_i + v')/2. The predictor towards sigma_n = 0
/// has no correction.</para>
/// <para>The predictor's x_i and v_i are kept (outside dispose scopes) until the correction that follows it; a correction without its
/// predictor throws. <see cref="FlowMatchScheduler.SetTimesteps"/> and <see cref="Dispose"/> free them.</para>
/// </remarks>
internal sealed class FlowMatchHeunScheduler : FlowMatchScheduler, IDisposable
{
    private double[] _sigmas = Array.Empty<double>();
    private Tensor? _heldSample;
    private Tensor? _heldVelocity;
    private int _heldIndex = -1;

    /// <summary>Creates the sampler over the model's <paramref name="schedule"/> (its T only) with 14 steps (or T) until
    /// <see cref="FlowMatchScheduler.SetTimesteps"/> is called.</summary>
    public FlowMatchHeunScheduler(DiffusionSchedule schedule) : base(schedule) => SetTimesteps(Math.Min(14, schedule.Timesteps));

    /// <summary>The name in messages and in the sampler registry.</summary>
    public const string DisplayName = "Flow matching Heun";

    /// <inheritdoc/>
    public override string Name => DisplayName;

    /// <summary>2: two network calls per step.</summary>
    public override int Order => 2;

    /// <summary>sigma_0 = 1 &gt; ... &gt; sigma_{n-1} = 1/T &gt; sigma_n = 0.</summary>
    public IReadOnlyList<double> Sigmas => _sigmas;

    /// <inheritdoc/>
    protected override void Build(int steps)
    {
        Dispose();
        _sigmas = FlowSigmas(Schedule.Timesteps, steps);
        // Position p sees sigma_{ceil(p/2)}: sigma_0, sigma_1, sigma_1, ..., sigma_{n-1}, sigma_{n-1} (2n - 1 positions).
        SetLoop(Enumerable.Range(0, 2 * steps - 1).Select(p => _sigmas[(p + 1) / 2]).ToArray());
    }

    /// <summary>The predictor (even <paramref name="index"/>) or the correction (odd) of the class remarks.</summary>
    /// <inheritdoc/>
    public override SchedulerOutput StepAt(int index, Tensor modelOutput, Tensor sample, Tensor? noise = null)
    {
        var v = Velocity(modelOutput, sample);
        if (index < 0 || index >= Timesteps.Count)
            throw new ArgumentOutOfRangeException(nameof(index), index, $"The loop position must lie between 0 and {Timesteps.Count - 1}.");
        int i = index / 2;                                              // the step from sigma_i to sigma_{i+1}
        double sigma = _sigmas[i], next = _sigmas[i + 1];
        if (index % 2 == 0)
        {
            Dispose();
            using var scope = NewDisposeScope();
            var predicted = SchedulerCore.Combine(1.0, sample, next - sigma, v);   // x' = x_i + (sigma_{i+1} - sigma_i) v_i
            var x0 = PredictedX0(sample, v, sigma);
            if (next > 0)
            {
                _heldSample = sample.clone().DetachFromDisposeScope();
                _heldVelocity = v.clone().DetachFromDisposeScope();
                _heldIndex = index;
            }

            return new SchedulerOutput(predicted.MoveToOuterDisposeScope(), x0.MoveToOuterDisposeScope());
        }

        if (_heldIndex != index - 1 || _heldSample is null || _heldVelocity is null || !_heldSample.shape.SequenceEqual(sample.shape))
            throw new InvalidOperationException($"Heun's correction at loop position {index} needs the predictor step at position {index - 1} just before it.");
        using (var scope = NewDisposeScope())
        {
            var mean = SchedulerCore.Combine(0.5, _heldVelocity, 0.5, v);                  // (v_i + v') / 2
            var corrected = SchedulerCore.Combine(1.0, _heldSample, next - sigma, mean);   // x_{i+1} = x_i + (sigma_{i+1} - sigma_i) mean
            var x0 = PredictedX0(sample, v, next);
            var result = new SchedulerOutput(corrected.MoveToOuterDisposeScope(), x0.MoveToOuterDisposeScope());
            Dispose();
            return result;
        }
    }

    /// <summary>Frees the predictor's kept tensors; the scheduler stays usable.</summary>
    public void Dispose()
    {
        _heldSample?.Dispose();
        _heldVelocity?.Dispose();
        _heldSample = null;
        _heldVelocity = null;
        _heldIndex = -1;
    }
}
