using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// Euler ancestral sampling, as diffusers' EulerAncestralDiscreteScheduler (k-diffusion's sample_euler_ancestral): an Euler step of
/// the probability-flow ODE down to sigma_down, then fresh noise of standard deviation sigma_up, so that the step's marginal matches
/// sigma_{i+1} (the ancestral split of the DDPM posterior in sigma space). Stochastic; one network call per step.
/// </summary>
/// <remarks>Timesteps: the spacing's (linspace by default: T - 1 .. 0 at float32 steps of (T - 1)/(n - 1), as numpy's
/// linspace with dtype float32), sigmas linearly interpolated between the training sigmas there, then 0. Step: with s = sigma_i and
/// s' = sigma_{i+1}, sigma_up = sqrt(s'^2 (s^2 - s'^2)/s^2), sigma_down = sqrt(s'^2 - sigma_up^2), x_{i+1} = x_i + (sigma_down - s)
/// (x_i - D(x_i; s))/s + sigma_up z.</remarks>
internal sealed class EulerAncestralScheduler : SigmaSpaceScheduler
{
    private double[] _sigmas = Array.Empty<double>();

    /// <summary>Creates the sampler over <paramref name="schedule"/> with 50 steps until <see cref="SigmaSpaceScheduler.SetTimesteps"/> is called.</summary>
    /// <param name="schedule">The forward-process schedule the model was trained with.</param>
    /// <param name="clipSample">Clamp each x0_hat to [-1, 1] (false: diffusers' numbers).</param>
    /// <param name="spacing">How the timesteps are chosen; <see cref="TimestepSpacing.Linspace"/> (continuous, unrounded) as in diffusers.</param>
    /// <param name="prediction">What the model output is (epsilon, x_0 or v).</param>
    /// <param name="dynamicThresholding">Threshold each x0_hat dynamically (Imagen, section 2.3) instead of clipping it.</param>
    /// <param name="dynamicThresholdingRatio">diffusers' dynamic_thresholding_ratio: the quantile of |x_0| that dynamic thresholding reads (0.995).</param>
    /// <param name="sampleMaxValue">diffusers' sample_max_value: the largest dynamic threshold s (no bound by default).</param>
    public EulerAncestralScheduler(DiffusionSchedule schedule, bool clipSample = true, TimestepSpacing spacing = TimestepSpacing.Linspace,
        PredictionType prediction = PredictionType.Epsilon, bool dynamicThresholding = false, double dynamicThresholdingRatio = SchedulerCore.DynamicThresholdPercentile, double sampleMaxValue = double.PositiveInfinity)
        : base(schedule, clipSample, spacing, prediction, dynamicThresholding, dynamicThresholdingRatio, sampleMaxValue) => SetTimesteps(Math.Min(50, schedule.Timesteps));

    /// <summary>The name in messages and in the sampler registry.</summary>
    public const string DisplayName = "Euler ancestral";

    /// <inheritdoc/>
    public override string Name => DisplayName;

    /// <summary>True: every step but the last adds sigma_up z.</summary>
    public override bool NeedsNoise => true;

    /// <summary>sigma_0 &gt; ... &gt; sigma_{n-1} &gt; sigma_n = 0.</summary>
    public IReadOnlyList<double> Sigmas => _sigmas;

    /// <inheritdoc/>
    protected override void Build(int steps)
    {
        int last = Schedule.Timesteps - 1;
        double[] timesteps = Spacing == TimestepSpacing.Linspace
            // np.linspace(0, T - 1, n, dtype=float32)[::-1]: computed in float64, cast to float32; the end points exact.
            ? Enumerable.Range(0, steps).Select(j => steps == 1 ? 0.0 : j == steps - 1 ? last : (double)(float)(j * ((double)last / (steps - 1))))
                .Reverse().ToArray()
            : SchedulerCore.SpacedTimesteps(Spacing, Schedule.Timesteps, steps).Select(t => (double)t).ToArray();
        _sigmas = timesteps.Select(t => SigmaSpace.SigmaAtLinear(t, TrainingSigmas)).Append(0.0).ToArray();
        SetLoop(_sigmas[..^1], timesteps);
    }

    /// <summary>One ancestral Euler step (see the class remarks); <paramref name="noise"/> is required except on the last step.</summary>
    /// <inheritdoc/>
    public override SchedulerOutput StepAt(int index, Tensor modelOutput, Tensor sample, Tensor? noise = null)
    {
        SchedulerCore.CheckStepArguments(modelOutput, sample);
        double sigma = _sigmas[index], next = _sigmas[index + 1];
        double sigmaUp = Math.Sqrt(next * next * (sigma * sigma - next * next) / (sigma * sigma));
        double sigmaDown = Math.Sqrt(next * next - sigmaUp * sigmaUp);
        Tensor? z = sigmaUp > 0 ? SchedulerCore.CheckNoise(noise, sample, nameof(EulerAncestralScheduler)) : null;
        using var scope = NewDisposeScope();
        var x0 = Denoised(modelOutput, sample, sigma);
        var prev = EulerStep(sample, Derivative(sample, x0, sigma), sigmaDown - sigma);
        if (z is not null)
        {
            SchedulerCore.AddScaled_(prev, sigmaUp, z);
        }

        return new SchedulerOutput(prev.MoveToOuterDisposeScope(), x0.MoveToOuterDisposeScope());
    }
}
