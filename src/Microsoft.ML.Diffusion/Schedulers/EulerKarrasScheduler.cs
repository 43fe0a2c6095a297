using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// Euler's method on Karras sigmas (Karras et al. 2022, EDM, Algorithm 2 without churn, i.e. Algorithm 1 without its second-order
/// correction): deterministic, one network call per step, as diffusers' EulerDiscreteScheduler with use_karras_sigmas=True.
/// </summary>
/// <remarks>Noise levels: EDM eq. 5 with rho = 7 between the training sigmas of the first and last timesteps of the spacing
/// (linspace: sigma_{T-1} and sigma_0), then 0. Each step: d_i = (x_i - D(x_i; sigma_i))/sigma_i, x_{i+1} = x_i + (sigma_{i+1} -
/// sigma_i) d_i; the last step lands on D itself.</remarks>
internal sealed class EulerKarrasScheduler : SigmaSpaceScheduler
{
    private double[] _sigmas = Array.Empty<double>();

    /// <summary>Creates the sampler over <paramref name="schedule"/> with 50 steps until <see cref="SigmaSpaceScheduler.SetTimesteps"/> is called.</summary>
    /// <param name="schedule">The forward-process schedule the model was trained with.</param>
    /// <param name="clipSample">Clamp each x0_hat to [-1, 1] (false: diffusers' numbers).</param>
    /// <param name="spacing">Which timesteps bound the Karras sigmas; <see cref="TimestepSpacing.Linspace"/> (0 .. T - 1) as in diffusers.</param>
    /// <param name="prediction">What the model output is (epsilon, x_0 or v).</param>
    /// <param name="dynamicThresholding">Threshold each x0_hat dynamically (Imagen, section 2.3) instead of clipping it.</param>
    /// <param name="dynamicThresholdingRatio">diffusers' dynamic_thresholding_ratio: the quantile of |x_0| that dynamic thresholding reads (0.995).</param>
    /// <param name="sampleMaxValue">diffusers' sample_max_value: the largest dynamic threshold s (no bound by default).</param>
    public EulerKarrasScheduler(DiffusionSchedule schedule, bool clipSample = true, TimestepSpacing spacing = TimestepSpacing.Linspace,
        PredictionType prediction = PredictionType.Epsilon, bool dynamicThresholding = false, double dynamicThresholdingRatio = SchedulerCore.DynamicThresholdPercentile, double sampleMaxValue = double.PositiveInfinity)
        : base(schedule, clipSample, spacing, prediction, dynamicThresholding, dynamicThresholdingRatio, sampleMaxValue) => SetTimesteps(Math.Min(50, schedule.Timesteps));

    /// <summary>The name in messages and in the sampler registry.</summary>
    public const string DisplayName = "Euler (Karras sigmas)";

    /// <inheritdoc/>
    public override string Name => DisplayName;

    /// <summary>False: an ODE solver.</summary>
    public override bool NeedsNoise => false;

    /// <summary>sigma_0 &gt; ... &gt; sigma_{n-1} &gt; sigma_n = 0.</summary>
    public IReadOnlyList<double> Sigmas => _sigmas;

    /// <inheritdoc/>
    protected override void Build(int steps)
    {
        _sigmas = KarrasSigmasWithZero(steps);
        SetLoop(_sigmas[..^1]);
    }

    /// <summary>EDM Algorithm 1, lines 4-5 (Euler): x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (x_i - D(x_i; sigma_i))/sigma_i.</summary>
    /// <inheritdoc/>
    public override SchedulerOutput StepAt(int index, Tensor modelOutput, Tensor sample, Tensor? noise = null)
    {
        SchedulerCore.CheckStepArguments(modelOutput, sample);
        double sigma = _sigmas[index], next = _sigmas[index + 1];
        using var scope = NewDisposeScope();
        var x0 = Denoised(modelOutput, sample, sigma);
        var prev = EulerStep(sample, Derivative(sample, x0, sigma), next - sigma);
        return new SchedulerOutput(prev.MoveToOuterDisposeScope(), x0.MoveToOuterDisposeScope());
    }
}
