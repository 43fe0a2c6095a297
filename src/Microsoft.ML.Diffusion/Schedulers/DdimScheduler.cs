using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// DDIM sampling (Song et al. 2021, eq. 12 with sigma_t from eq. 16): deterministic for eta = 0, DDPM-like for
/// eta = 1. Visits the timesteps of its <see cref="TimestepSpacing"/> (leading by default), steps from each to the
/// next element of <see cref="Timesteps"/>, and treats alpha_bar of the timestep after the last as 1 (diffusers' set_alpha_to_one;
/// alpha_bar_0 when <see cref="SetAlphaToOne"/> is false).
/// </summary>
internal sealed class DdimScheduler : IDiffusionScheduler
{
    private IReadOnlyList<int> _timesteps;

    /// <summary>Creates a DDIM sampler over <paramref name="schedule"/>, visiting all T timesteps until <see cref="SetTimesteps"/> is called.</summary>
    /// <param name="schedule">The forward-process schedule the model was trained with.</param>
    /// <param name="eta">Scale of sigma_t (eq. 16), at least 0: 0 gives deterministic DDIM, 1 gives DDPM's posterior variance.
    /// Above 1 the direction term sqrt(1 - alpha_bar_prev - sigma^2) is clamped at 0.</param>
    /// <param name="clipSample">Clamp the predicted x_0 to [-1, 1] (and re-derive epsilon from it, as GLIDE and diffusers'
    /// use_clipped_model_output do).</param>
    /// <param name="spacing">How <see cref="SetTimesteps"/> picks the timesteps; <see cref="TimestepSpacing.Leading"/> as in diffusers' DDIMScheduler.</param>
    /// <param name="prediction">What the model output is (epsilon, x_0 or v); converted to (x_0, eps) before the update.</param>
    /// <param name="dynamicThresholding">Threshold the predicted x_0 dynamically (Imagen, section 2.3) instead of clipping it;
    /// epsilon is then re-derived from the thresholded x_0.</param>
    /// <param name="dynamicThresholdingRatio">diffusers' dynamic_thresholding_ratio: the quantile of |x_0| that dynamic thresholding reads (0.995).</param>
    /// <param name="sampleMaxValue">diffusers' sample_max_value: the largest dynamic threshold s (no bound by default).</param>
    /// <param name="setAlphaToOne">diffusers' set_alpha_to_one: the step after the last timestep lands on alpha_bar = 1 (true, the
    /// default) or on alpha_bar_0, the schedule's first (false; diffusers' final_alpha_cumprod = alphas_cumprod[0]).</param>
    public DdimScheduler(DiffusionSchedule schedule, float eta = 0f, bool clipSample = true, TimestepSpacing spacing = TimestepSpacing.Leading,
        PredictionType prediction = PredictionType.Epsilon, bool dynamicThresholding = false, double dynamicThresholdingRatio = SchedulerCore.DynamicThresholdPercentile, double sampleMaxValue = double.PositiveInfinity, bool setAlphaToOne = true)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        if (!(eta >= 0) || float.IsInfinity(eta))
        {
            throw new ArgumentOutOfRangeException(nameof(eta), eta, $"DDIM eta must be a finite number >= 0 (0 = deterministic, 1 = DDPM variance); got {eta}.");
        }

        Schedule = schedule;
        Eta = eta;
        ClipSample = clipSample;
        Spacing = SchedulerCore.CheckSpacing(spacing, nameof(spacing));
        Prediction = SchedulerCore.CheckPrediction(prediction, nameof(prediction));
        DynamicThresholding = dynamicThresholding;
        (DynamicThresholdingRatio, SampleMaxValue) = SchedulerCore.CheckThreshold(dynamicThresholdingRatio, sampleMaxValue);
        SetAlphaToOne = setAlphaToOne;
        _timesteps = SchedulerCore.SpacedTimesteps(spacing, schedule.Timesteps, schedule.Timesteps);
    }

    /// <summary>The name in messages and in the sampler registry.</summary>
    public const string DisplayName = "DDIM";

    /// <inheritdoc/>
    public string Name => DisplayName;

    /// <inheritdoc/>
    public DiffusionSchedule Schedule { get; }

    /// <summary>Scale of the per-step noise sigma_t (DDIM eq. 16).</summary>
    public float Eta { get; }

    /// <summary>Whether the predicted x_0 is clamped to [-1, 1].</summary>
    public bool ClipSample { get; }

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

    /// <summary>diffusers' set_alpha_to_one: whether the step after the last timestep lands on alpha_bar = 1 rather than alpha_bar_0.</summary>
    public bool SetAlphaToOne { get; }

    /// <summary>alpha_bar of <paramref name="prev"/>, a timestep or -1 after the last: 1, or alpha_bar_0 without <see cref="SetAlphaToOne"/>
    /// (diffusers' final_alpha_cumprod).</summary>
    private double AlphaBarPrev(int prev) => prev < 0 && !SetAlphaToOne ? Schedule.AlphaBar(0) : Schedule.AlphaBar(prev);

    /// <inheritdoc/>
    public IReadOnlyList<int> Timesteps => _timesteps;

    /// <summary>True when eta &gt; 0.</summary>
    public bool NeedsNoise => Eta > 0;

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

    /// <summary>sigma_t of DDIM eq. 16 for a step from <paramref name="timestep"/> to <see cref="PreviousTimestep"/>.</summary>
    /// <param name="timestep">A timestep in [0, T).</param>
    public double Sigma(int timestep)
    {
        double abarT = Schedule.AlphaBar(timestep);
        double abarPrev = AlphaBarPrev(PreviousTimestep(timestep));
        // DDIM eq. 16: sigma_t = eta sqrt((1 - alpha_{t-1})/(1 - alpha_t)) sqrt(1 - alpha_t/alpha_{t-1}) (the paper's alpha is alpha_bar).
        return Eta * Math.Sqrt((1.0 - abarPrev) / (1.0 - abarT)) * Math.Sqrt(1.0 - abarT / abarPrev);
    }

    /// <inheritdoc/>
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
        double abarPrev = AlphaBarPrev(prev);                           // 1 (or alpha_bar_0) when prev = -1 (landing on x_0)
        double sigma = Sigma(timestep);                                 // eq. 16
        double dirCoef = Math.Sqrt(Math.Max(1.0 - abarPrev - sigma * sigma, 0.0));

        Tensor? z = sigma > 0 ? SchedulerCore.CheckNoise(noise, sample, nameof(DdimScheduler)) : null;

        using var scope = NewDisposeScope();

        // DDIM eq. 12, "predicted x_0": (x_t - sqrt(1 - alpha_t) eps_theta(x_t)) / sqrt(alpha_t) for epsilon prediction;
        // x_0 and v outputs are converted to the same (x0_hat, eps_hat) pair.
        // A learned-variance output (2C channels) contributes only its prediction half.
        var prediction = SchedulerCore.SplitOutput(modelOutput, sample).Prediction;
        var (x0, eps) = SchedulerCore.ToX0AndEps(prediction, sample, abarT, Prediction);
        var thresholded = SchedulerCore.ThresholdX0(x0, ClipSample, DynamicThresholding, DynamicThresholdingRatio, SampleMaxValue);
        if (!ReferenceEquals(thresholded, x0))
        {
            x0 = thresholded;
            // Re-derive eps from the thresholded x_0 (eq. 4 solved for eps): (x_t - sqrt(alpha_t) x0_hat) / sqrt(1 - alpha_t).
            eps = SchedulerCore.EpsFromX0(sample, x0, abarT);
        }

        // DDIM eq. 12: x_{t-1} = sqrt(alpha_{t-1}) x0_hat + sqrt(1 - alpha_{t-1} - sigma_t^2) eps + sigma_t eps_t.
        var xPrev = SchedulerCore.Combine(Math.Sqrt(abarPrev), x0, dirCoef, eps);
        if (z is not null)
        {
            SchedulerCore.AddScaled_(xPrev, sigma, z);
        }

        return new SchedulerOutput(xPrev.MoveToOuterDisposeScope(), x0.MoveToOuterDisposeScope());
    }

    /// <summary>RePaint and classifier guidance (by the shifted noise prediction of Algorithm 2).</summary>
    public SchedulerCapabilities Capabilities => SchedulerCapabilities.RePaint | SchedulerCapabilities.ClassifierGuidance;
}
