using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// Heun's second-order method on Karras sigmas (Karras et al. 2022, EDM, Algorithm 1; diffusers' HeunDiscreteScheduler with
/// use_karras_sigmas=True): deterministic; n steps take 2n - 1 network calls (<see cref="Order"/> 2), the last step being Euler's.
/// </summary>
/// <remarks>
/// <para>Loop positions (diffusers' interleaved timesteps): position 0 and every even position 2i are Euler predictors from sigma_i
/// to sigma_{i+1}: d_i = (x_i - D(x_i; sigma_i))/sigma_i, x' = x_i + (sigma_{i+1} - sigma_i) d_i (EDM Algorithm 1, lines 4-5); each odd
/// position 2i + 1 is the correction at sigma_{i+1}: d' = (x' - D(x'; sigma_{i+1}))/sigma_{i+1},
/// x_{i+1} = x_i + (sigma_{i+1} - sigma_i)(d_i + d')/2 (lines 6-8). The predictor towards sigma_n = 0 has no correction.</para>
/// <para>The predictor's x_i and d_i are kept (outside dispose scopes) until the correction that follows it; a correction without
/// its predictor throws. <see cref="SigmaSpaceScheduler.SetTimesteps"/> and <see cref="Dispose"/> free them.</para>
/// </remarks>
internal sealed class HeunKarrasScheduler : SigmaSpaceScheduler, IDisposable
{
    private double[] _sigmas = Array.Empty<double>();
    private Tensor? _heldSample;
    private Tensor? _heldDerivative;
    private int _heldIndex = -1;

    /// <summary>Creates the sampler over <paramref name="schedule"/> with 50 steps until <see cref="SigmaSpaceScheduler.SetTimesteps"/> is called.</summary>
    /// <param name="schedule">The forward-process schedule the model was trained with.</param>
    /// <param name="clipSample">Clamp each x0_hat to [-1, 1] (false: diffusers' numbers).</param>
    /// <param name="spacing">Which timesteps bound the Karras sigmas; <see cref="TimestepSpacing.Linspace"/> (0 .. T - 1) as in diffusers.</param>
    /// <param name="prediction">What the model output is (epsilon, x_0 or v).</param>
    /// <param name="dynamicThresholding">Threshold each x0_hat dynamically (Imagen, section 2.3) instead of clipping it.</param>
    /// <param name="dynamicThresholdingRatio">diffusers' dynamic_thresholding_ratio: the quantile of |x_0| that dynamic thresholding reads (0.995).</param>
    /// <param name="sampleMaxValue">diffusers' sample_max_value: the largest dynamic threshold s (no bound by default).</param>
    public HeunKarrasScheduler(DiffusionSchedule schedule, bool clipSample = true, TimestepSpacing spacing = TimestepSpacing.Linspace,
        PredictionType prediction = PredictionType.Epsilon, bool dynamicThresholding = false, double dynamicThresholdingRatio = SchedulerCore.DynamicThresholdPercentile, double sampleMaxValue = double.PositiveInfinity)
        : base(schedule, clipSample, spacing, prediction, dynamicThresholding, dynamicThresholdingRatio, sampleMaxValue) => SetTimesteps(Math.Min(50, schedule.Timesteps));

    /// <summary>The name in messages and in the sampler registry.</summary>
    public const string DisplayName = "Heun (Karras sigmas)";

    /// <inheritdoc/>
    public override string Name => DisplayName;

    /// <summary>2: two network calls per step.</summary>
    public override int Order => 2;

    /// <summary>False: an ODE solver.</summary>
    public override bool NeedsNoise => false;

    /// <summary>sigma_0 &gt; ... &gt; sigma_{n-1} &gt; sigma_n = 0.</summary>
    public IReadOnlyList<double> Sigmas => _sigmas;

    /// <inheritdoc/>
    protected override void Build(int steps)
    {
        Dispose();
        _sigmas = KarrasSigmasWithZero(steps);
        // Position p sees sigma_{ceil(p/2)}: sigma_0, sigma_1, sigma_1, ..., sigma_{n-1}, sigma_{n-1} (2n - 1 positions).
        SetLoop(Enumerable.Range(0, 2 * steps - 1).Select(p => _sigmas[(p + 1) / 2]).ToArray());
    }

    /// <summary>The predictor (even <paramref name="index"/>) or the correction (odd) of the class remarks.</summary>
    /// <inheritdoc/>
    public override SchedulerOutput StepAt(int index, Tensor modelOutput, Tensor sample, Tensor? noise = null)
    {
        SchedulerCore.CheckStepArguments(modelOutput, sample);
        if (index < 0 || index >= Timesteps.Count)
            throw new ArgumentOutOfRangeException(nameof(index), index, $"The loop position must lie between 0 and {Timesteps.Count - 1}.");
        int i = index / 2;                                              // the step from sigma_i to sigma_{i+1}
        double sigma = _sigmas[i], next = _sigmas[i + 1];
        if (index % 2 == 0)
        {
            Dispose();
            using var scope = NewDisposeScope();
            var x0 = Denoised(modelOutput, sample, sigma);
            var d = Derivative(sample, x0, sigma);                      // d_i (line 4)
            var predicted = EulerStep(sample, d, next - sigma);         // x' (line 5)
            if (next > 0)
            {
                _heldSample = sample.clone().DetachFromDisposeScope();
                _heldDerivative = d.DetachFromDisposeScope();
                _heldIndex = index;
            }

            return new SchedulerOutput(predicted.MoveToOuterDisposeScope(), x0.MoveToOuterDisposeScope());
        }

        if (_heldIndex != index - 1 || _heldSample is null || _heldDerivative is null || !_heldSample.shape.SequenceEqual(sample.shape))
            throw new InvalidOperationException($"Heun's correction at loop position {index} needs the predictor step at position {index - 1} just before it.");
        using (var scope = NewDisposeScope())
        {
            var x0 = Denoised(modelOutput, sample, next);
            var d2 = Derivative(sample, x0, next);                      // d'_i (line 7)
            var mean = SchedulerCore.Combine(0.5, _heldDerivative, 0.5, d2);
            var corrected = EulerStep(_heldSample, mean, next - sigma); // line 8
            var result = new SchedulerOutput(corrected.MoveToOuterDisposeScope(), x0.MoveToOuterDisposeScope());
            Dispose();
            return result;
        }
    }

    /// <summary>Frees the predictor's kept tensors; the scheduler stays usable.</summary>
    public void Dispose()
    {
        _heldSample?.Dispose();
        _heldDerivative?.Dispose();
        _heldSample = null;
        _heldDerivative = null;
        _heldIndex = -1;
    }
}
