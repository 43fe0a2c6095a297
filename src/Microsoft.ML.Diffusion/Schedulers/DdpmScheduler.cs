using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// Ancestral sampling of DDPM (Ho et al. 2020, Algorithm 2, eq. 6-7 and 11 via the predicted x_0), with diffusers'
/// generalisation to fewer steps than T: each step uses alpha_bar_t and alpha_bar_prev of the previous visited
/// timestep, so beta'_t = 1 - alpha_bar_t/alpha_bar_prev plays the part of beta_t. "Previous" is the next element of
/// <see cref="Timesteps"/>, so any <see cref="TimestepSpacing"/> works, uniform or not.
/// </summary>
internal sealed class DdpmScheduler : IDiffusionScheduler
{
    private IReadOnlyList<int> _timesteps;

    /// <summary>Creates a DDPM sampler over <paramref name="schedule"/> whose reverse-step variance is <paramref name="variance"/>, fixed
    /// or learned; it visits all T timesteps until <see cref="SetTimesteps"/> is called.</summary>
    /// <param name="schedule">The forward-process schedule the model was trained with.</param>
    /// <param name="variance">The reverse-step variance (DDPM section 3.2: <see cref="VarianceType.FixedSmall"/>, the posterior variance
    /// beta_tilde_t, or <see cref="VarianceType.FixedLarge"/>, beta_t); with <see cref="VarianceType.Learned"/>, <see cref="Step"/> expects a
    /// model output of 2 C channels (the prediction, then the raw variance r of Improved DDPM eq. 15).</param>
    /// <param name="clipSample">Clamp the predicted x_0 to [-1, 1] before forming the posterior mean.</param>
    /// <param name="spacing">How <see cref="SetTimesteps"/> picks the timesteps.</param>
    /// <param name="prediction">What the model output (its prediction half) is.</param>
    /// <param name="dynamicThresholding">Threshold the predicted x_0 dynamically (Imagen, section 2.3) instead of clipping it.</param>
    /// <param name="dynamicThresholdingRatio">diffusers' dynamic_thresholding_ratio: the quantile of |x_0| that dynamic thresholding reads (0.995).</param>
    /// <param name="sampleMaxValue">diffusers' sample_max_value: the largest dynamic threshold s (no bound by default).</param>
    public DdpmScheduler(DiffusionSchedule schedule, VarianceType variance = VarianceType.FixedSmall, bool clipSample = true,
        TimestepSpacing spacing = TimestepSpacing.Leading, PredictionType prediction = PredictionType.Epsilon, bool dynamicThresholding = false, double dynamicThresholdingRatio = SchedulerCore.DynamicThresholdPercentile, double sampleMaxValue = double.PositiveInfinity)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        if (!Enum.IsDefined(variance))
        {
            throw new ArgumentOutOfRangeException(nameof(variance), variance,
                $"Unknown variance type {variance}; expected one of {string.Join(", ", Enum.GetNames<VarianceType>())}.");
        }

        Schedule = schedule;
        ClipSample = clipSample;
        VarianceType = variance;
        Spacing = SchedulerCore.CheckSpacing(spacing, nameof(spacing));
        Prediction = SchedulerCore.CheckPrediction(prediction, nameof(prediction));
        DynamicThresholding = dynamicThresholding;
        (DynamicThresholdingRatio, SampleMaxValue) = SchedulerCore.CheckThreshold(dynamicThresholdingRatio, sampleMaxValue);
        _timesteps = SchedulerCore.SpacedTimesteps(spacing, schedule.Timesteps, schedule.Timesteps);
    }

    /// <summary>The name in messages and in the sampler registry.</summary>
    public const string DisplayName = "DDPM";

    /// <inheritdoc/>
    public string Name => DisplayName;

    /// <inheritdoc/>
    public DiffusionSchedule Schedule { get; }

    /// <summary>Whether the predicted x_0 is clamped to [-1, 1].</summary>
    public bool ClipSample { get; }

    /// <summary>The reverse-step variance: fixed small, fixed large, or learned (Improved DDPM eq. 15).</summary>
    public VarianceType VarianceType { get; }

    /// <summary>How <see cref="SetTimesteps"/> picks the timesteps.</summary>
    public TimestepSpacing Spacing { get; }

    /// <summary>What the model output passed to <see cref="Step"/> is.</summary>
    public PredictionType Prediction { get; }

    /// <summary>Whether the predicted x_0 is dynamically thresholded (replacing <see cref="ClipSample"/>).</summary>
    public bool DynamicThresholding { get; }

    /// <summary>diffusers' dynamic_thresholding_ratio: the quantile of |x_0| that dynamic thresholding reads.</summary>
    public double DynamicThresholdingRatio { get; }

    /// <summary>diffusers' sample_max_value: the largest dynamic threshold s.</summary>
    public double SampleMaxValue { get; }

    /// <inheritdoc/>
    public IReadOnlyList<int> Timesteps => _timesteps;

    /// <summary>Always true: every DDPM step but the last adds sigma_t z (Algorithm 2, line 4).</summary>
    public bool NeedsNoise => true;

    /// <inheritdoc/>
    public void SetTimesteps(int steps) => _timesteps = SchedulerCore.SpacedTimesteps(Spacing, Schedule.Timesteps, steps);

    /// <inheritdoc/>
    public int PreviousTimestep(int timestep) => SchedulerCore.Previous(_timesteps, timestep, Schedule.Timesteps);

    /// <inheritdoc/>
    public Tensor AddNoise(Tensor x0, Tensor noise, Tensor timesteps) => Schedule.AddNoise(x0, noise, timesteps);

    /// <summary>DDPM eq. 4 at alpha_bar of Timesteps[<paramref name="index"/>].</summary>
    /// <inheritdoc/>
    public Tensor AddNoiseAt(Tensor x0, Tensor noise, int index) =>
        SchedulerCore.AddNoiseVp(x0, noise, Schedule.AlphaBar(SchedulerCore.CheckIndex(_timesteps, index)));

    /// <summary>
    /// The bounds of the learned log variance for the step from <paramref name="timestep"/> (Improved DDPM eq. 15):
    /// log beta'_t and log beta_tilde'_t with beta'_t = 1 - alpha_bar_t/alpha_bar_prev and beta_tilde'_t =
    /// (1 - alpha_bar_prev)/(1 - alpha_bar_t) beta'_t over the visited timesteps, as improved-diffusion's respacing does.
    /// On the last step (beta_tilde' = 0) the lower bound is the beta_tilde' of the step that lands on <paramref name="timestep"/>,
    /// as in improved-diffusion's posterior_log_variance_clipped (with all T steps: schedule's <see cref="DiffusionSchedule.PosteriorLogVarianceClipped"/>).
    /// </summary>
    /// <param name="timestep">A timestep in [0, T).</param>
    public (double LogBeta, double LogBetaTilde) LogVarianceBounds(int timestep)
    {
        int prev = PreviousTimestep(timestep);
        double betaT = 1.0 - Schedule.AlphaBar(timestep) / Schedule.AlphaBar(prev);
        double betaTilde = PosteriorVarianceBetween(timestep, prev);
        if (prev < 0)
        {
            // Clipped as improved-diffusion clips index 0: use the variance of the step from the visited timestep above.
            int k = Enumerable.Range(0, _timesteps.Count).FirstOrDefault(i => _timesteps[i] == timestep, -1);
            int above = k > 0 ? _timesteps[k - 1] : timestep < Schedule.Timesteps - 1 ? timestep + 1 : -1;
            betaTilde = above >= 0 ? PosteriorVarianceBetween(above, timestep) : betaT;
        }

        return (Math.Log(betaT), Math.Log(Math.Max(betaTilde, 1e-20)));
    }

    /// <summary>beta_tilde' = (1 - alpha_bar_prev)/(1 - alpha_bar_t) (1 - alpha_bar_t/alpha_bar_prev) (DDPM eq. 7 for a strided step).</summary>
    private double PosteriorVarianceBetween(int timestep, int prev)
    {
        double abarT = Schedule.AlphaBar(timestep);
        double abarPrev = Schedule.AlphaBar(prev);
        return (1.0 - abarPrev) / (1.0 - abarT) * (1.0 - abarT / abarPrev);
    }

    /// <summary>
    /// The learned log variance log Sigma of the step from <paramref name="timestep"/> for the raw variance channels
    /// <paramref name="varianceOutput"/> r: v log beta'_t + (1 - v) log beta_tilde'_t with v = (r + 1)/2 (Improved DDPM eq. 15,
    /// bounds from <see cref="LogVarianceBounds"/>). A new tensor in r's dtype.
    /// </summary>
    /// <param name="varianceOutput">The variance half of the model output, any shape.</param>
    /// <param name="timestep">A timestep in [0, T).</param>
    public Tensor LogVariance(Tensor varianceOutput, int timestep)
    {
        ArgumentNullException.ThrowIfNull(varianceOutput);
        var (logBeta, logBetaTilde) = LogVarianceBounds(timestep);
        using var scope = NewDisposeScope();
        var hi = full(new long[] { 1 }, logBeta, dtype: varianceOutput.dtype, device: varianceOutput.device);
        var lo = full(new long[] { 1 }, logBetaTilde, dtype: varianceOutput.dtype, device: varianceOutput.device);
        return VariationalBound.InterpolateLogVariance(varianceOutput, hi, lo).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    /// <remarks>With <see cref="VarianceType.Learned"/>, <paramref name="modelOutput"/> has 2 C channels and the step noise is
    /// exp(log Sigma / 2) z per element (<see cref="LogVariance"/>); the fixed variances also accept such an output and ignore its
    /// variance half.</remarks>
    public Tensor Step(Tensor modelOutput, int timestep, Tensor sample, Tensor? noise = null) => SchedulerCore.PrevOnly(StepCore(modelOutput, timestep, sample, noise));

    /// <inheritdoc/>
    public SchedulerOutput StepAt(int index, Tensor modelOutput, Tensor sample, Tensor? noise = null) =>
        StepCore(modelOutput, _timesteps[index], sample, noise);

    /// <summary>Both results of the step; see <see cref="Step"/>.</summary>
    private SchedulerOutput StepCore(Tensor modelOutput, int timestep, Tensor sample, Tensor? noise)
    {
        SchedulerCore.CheckStepArguments(modelOutput, sample);
        int prev = PreviousTimestep(timestep);

        // Per-step scalars in float64.
        double abarT = Schedule.AlphaBar(timestep);
        double abarPrev = Schedule.AlphaBar(prev);                      // 1 when prev = -1 (landing on x_0)
        double alphaT = abarT / abarPrev;                               // alpha'_t (= alpha_t when prev = t - 1)
        double betaT = 1.0 - alphaT;                                    // beta'_t = 1 - alpha_bar_t/alpha_bar_prev
        double oneMinusAbarT = 1.0 - abarT;
        double oneMinusAbarPrev = 1.0 - abarPrev;

        // DDPM eq. 7: mu_tilde = sqrt(alpha_bar_prev) beta'_t/(1 - alpha_bar_t) x0_hat + sqrt(alpha'_t)(1 - alpha_bar_prev)/(1 - alpha_bar_t) x_t.
        double coef1 = Math.Sqrt(abarPrev) * betaT / oneMinusAbarT;
        double coef2 = Math.Sqrt(alphaT) * oneMinusAbarPrev / oneMinusAbarT;

        // Reverse-step variance: beta_tilde (DDPM eq. 7), beta'_t (section 3.2) or learned (below); no noise when landing on x_0.
        double variance = prev < 0 ? 0.0 : VarianceType switch
        {
            VarianceType.FixedSmall => Math.Max(oneMinusAbarPrev / oneMinusAbarT * betaT, 1e-20),
            _ => betaT,
        };

        Tensor? z = variance > 0 ? SchedulerCore.CheckNoise(noise, sample, nameof(DdpmScheduler)) : null;

        using var scope = NewDisposeScope();
        var (prediction, varianceOutput) = SchedulerCore.SplitOutput(modelOutput, sample);
        if (VarianceType == VarianceType.Learned && varianceOutput is null)
        {
            throw new ArgumentException(
                $"A learned-variance DDPM step needs the model output with 2 x {sample.shape[1]} channels (prediction and variance); " +
                $"got [{string.Join(", ", modelOutput.shape)}].", nameof(modelOutput));
        }

        // DDPM eq. 15 solved for x_0 (epsilon prediction): x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t);
        // x_0 and v outputs are converted by the same helper.
        var (x0, _) = SchedulerCore.ToX0AndEps(prediction, sample, abarT, Prediction);
        x0 = SchedulerCore.ThresholdX0(x0, ClipSample, DynamicThresholding, DynamicThresholdingRatio, SampleMaxValue);

        var xPrev = SchedulerCore.Combine(coef1, x0, coef2, sample);    // posterior mean mu_tilde_t (eq. 7)
        if (z is not null)
        {
            if (VarianceType == VarianceType.Learned)
            {
                // Improved DDPM: x_{t-1} = mu + exp(log Sigma / 2) z, log Sigma from eq. 15.
                var std = LogVariance(varianceOutput!, timestep).mul_(0.5).exp_();
                xPrev.add_(std.mul_(z));
            }
            else
            {
                SchedulerCore.AddScaled_(xPrev, Math.Sqrt(variance), z);    // Algorithm 2, line 4: + sigma_t z
            }
        }

        return new SchedulerOutput(xPrev.MoveToOuterDisposeScope(), x0.MoveToOuterDisposeScope());
    }

    /// <summary>RePaint and classifier guidance (by the mean shift of Algorithm 1).</summary>
    public SchedulerCapabilities Capabilities => SchedulerCapabilities.RePaint | SchedulerCapabilities.ClassifierGuidance;

    /// <summary>
    /// Sigma, the variance of the DDPM step from <paramref name="timestep"/> that classifier guidance's mean shift s Sigma g uses, as
    /// guided-diffusion's model_variance: fixed small: beta_tilde'_t (DDPM eq. 7 over the visited timesteps); fixed large: beta'_t =
    /// 1 - alpha_bar_t / alpha_bar_prev; learned: exp(log Sigma) of Improved DDPM eq. 15. On the last step (which adds no noise) the
    /// clipped value of <see cref="LogVarianceBounds"/> (the beta_tilde' of the step above) is used for the fixed variances, as
    /// guided-diffusion's posterior_log_variance_clipped does. Returns a tensor broadcastable to the sample.
    /// </summary>
    public Tensor GuidanceVariance(Tensor modelOutput, Tensor sample, int timestep)
    {
        if (VarianceType == VarianceType.Learned)
        {
            var variance = SchedulerCore.SplitOutput(modelOutput, sample).Variance
                ?? throw new ArgumentException(
                    $"A learned-variance DDPM step needs the model output with 2 x {sample.shape[1]} channels; got [{string.Join(", ", modelOutput.shape)}].",
                    nameof(modelOutput));
            return LogVariance(variance, timestep).exp_();
        }

        var (logBeta, logBetaTilde) = LogVarianceBounds(timestep);
        bool last = PreviousTimestep(timestep) < 0;
        double value = VarianceType == VarianceType.FixedLarge && !last ? Math.Exp(logBeta) : Math.Exp(logBetaTilde);
        return full(new long[] { 1 }, value, dtype: sample.dtype, device: sample.device);
    }
}
