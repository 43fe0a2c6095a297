namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// The configuration of a multistep solver on VP noise levels (<see cref="VpMultistepScheduler"/>), with diffusers' meanings
/// (DPMSolverMultistepScheduler and UniPCMultistepScheduler config keys in parentheses).
/// </summary>
internal sealed record MultistepSettings
{
    /// <summary>Clamp each predicted x_0 to [-1, 1] (diffusers has no such option for these solvers: false gives its numbers).</summary>
    public bool ClipSample { get; init; } = true;

    /// <summary>The timesteps when neither Karras sigmas nor Lu lambdas are used (timestep_spacing; see
    /// <see cref="DpmSolverMultistepScheduler"/> for how "linspace" differs).</summary>
    public TimestepSpacing Spacing { get; init; } = TimestepSpacing.Trailing;

    /// <summary>What the network predicts (prediction_type).</summary>
    public PredictionType Prediction { get; init; } = PredictionType.Epsilon;

    /// <summary>Dynamic thresholding of each predicted x_0 instead of clipping (thresholding).</summary>
    public bool DynamicThresholding { get; init; }

    /// <summary>The quantile of |x_0| that dynamic thresholding reads (dynamic_thresholding_ratio).</summary>
    public double DynamicThresholdingRatio { get; init; } = SchedulerCore.DynamicThresholdPercentile;

    /// <summary>The largest dynamic threshold (sample_max_value); infinity: no bound.</summary>
    public double SampleMaxValue { get; init; } = double.PositiveInfinity;

    /// <summary>Noise levels from Karras et al. 2022, eq. 5 with rho = 7, over the schedule's whole sigma range (use_karras_sigmas).</summary>
    public bool UseKarrasSigmas { get; init; }

    /// <summary>Noise levels uniform in lambda = log(alpha/sigma) over the schedule's range (use_lu_lambdas; Lu et al. 2022's
    /// "logSNR" step size).</summary>
    public bool UseLuLambdas { get; init; }

    /// <summary>Where the last step lands (final_sigmas_type).</summary>
    public FinalSigmasType FinalSigmasType { get; init; } = FinalSigmasType.Zero;

    /// <summary>Lower the order of the last step(s) (lower_order_final).</summary>
    public bool LowerOrderFinal { get; init; } = true;
}
