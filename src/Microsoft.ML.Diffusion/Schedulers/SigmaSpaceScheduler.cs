using Microsoft.ML.Diffusion.Schedules;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// What the samplers in sigma space (Karras et al. 2022, EDM) share, with diffusers' semantics: the loop's sample is
/// x = x_0 + sigma eps, which starts at <see cref="InitNoiseSigma"/> = sqrt(sigma_max^2 + 1) times standard normal noise; the network
/// sees x / sqrt(sigma^2 + 1) (the VP sample x_t at alpha_bar = 1 / (sigma^2 + 1)) at the continuous timestep whose training sigma is
/// sigma; its output is turned into the denoiser D(x; sigma) = x0_hat (<see cref="Denoised"/>). A subclass chooses the noise levels
/// of each loop position (<see cref="SetLoop"/>) and implements the update in <see cref="StepAt"/>.
/// </summary>
/// <remarks>Stepped by loop position only (<see cref="StepAt"/>); <see cref="Step"/> throws, and neither RePaint nor classifier
/// guidance applies (<see cref="Capabilities"/> is None). <see cref="AddNoise"/> is the VP forward process of the schedule.</remarks>
internal abstract class SigmaSpaceScheduler : IDiffusionScheduler
{
    private double[] _loopSigmas = Array.Empty<double>();
    private double[] _modelTimesteps = Array.Empty<double>();
    private IReadOnlyList<int> _timesteps = Array.Empty<int>();

    /// <summary>Sets up the sampler; call <see cref="SetTimesteps"/> from the subclass constructor.</summary>
    protected SigmaSpaceScheduler(DiffusionSchedule schedule, bool clipSample, TimestepSpacing spacing, PredictionType prediction, bool dynamicThresholding,
        double dynamicThresholdingRatio, double sampleMaxValue)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        if (schedule.Timesteps < 2)
            throw new ArgumentOutOfRangeException(nameof(schedule), schedule.Timesteps, "A sigma-space sampler needs a schedule of at least 2 timesteps.");
        Schedule = schedule;
        ClipSample = clipSample;
        Spacing = SchedulerCore.CheckSpacing(spacing, nameof(spacing));
        Prediction = SchedulerCore.CheckPrediction(prediction, nameof(prediction));
        DynamicThresholding = dynamicThresholding;
        (DynamicThresholdingRatio, SampleMaxValue) = SchedulerCore.CheckThreshold(dynamicThresholdingRatio, sampleMaxValue);
        TrainingSigmas = SigmaSpace.TrainingSigmas(schedule);
    }

    /// <inheritdoc/>
    public DiffusionSchedule Schedule { get; }

    /// <summary>Whether each x0_hat is clamped to [-1, 1] (false gives diffusers' numbers).</summary>
    public bool ClipSample { get; }

    /// <summary>How the timesteps (or the range of the Karras sigmas) are chosen.</summary>
    public TimestepSpacing Spacing { get; }

    /// <inheritdoc/>
    public PredictionType Prediction { get; }

    /// <summary>Whether each x0_hat is dynamically thresholded (replacing <see cref="ClipSample"/>).</summary>
    public bool DynamicThresholding { get; }

    /// <summary>diffusers' dynamic_thresholding_ratio: the quantile of |x_0| that dynamic thresholding reads.</summary>
    public double DynamicThresholdingRatio { get; }

    /// <summary>diffusers' sample_max_value: the largest dynamic threshold s.</summary>
    public double SampleMaxValue { get; }

    /// <summary>sigma_t = sqrt((1 - alpha_bar_t)/alpha_bar_t) for t = 0 .. T - 1.</summary>
    protected double[] TrainingSigmas { get; }

    /// <summary>The network timesteps of the loop positions, rounded (for progress reports); they may repeat.</summary>
    public IReadOnlyList<int> Timesteps => _timesteps;

    /// <summary>The noise level the network sees at each loop position.</summary>
    public IReadOnlyList<double> LoopSigmas => _loopSigmas;

    /// <inheritdoc/>
    public abstract bool NeedsNoise { get; }

    /// <inheritdoc/>
    public virtual int Order => 1;

    /// <summary>None: see the class remarks.</summary>
    public SchedulerCapabilities Capabilities => SchedulerCapabilities.None;

    /// <inheritdoc/>
    public abstract string Name { get; }

    /// <summary>sqrt(sigma_max^2 + 1): the starting sample over sqrt(sigma^2 + 1) is standard normal, as every VP sampler's x_T, so a
    /// seed starts every sampler from the same x_T.</summary>
    /// <remarks>diffusers returns sqrt(sigma_max^2 + 1) for "leading" spacing but sigma_max itself for "linspace" and "trailing"; the two
    /// differ by a factor 1 + 1/(2 sigma_max^2) (2e-5 for the linear schedule with T = 1000, sigma_max = 157).</remarks>
    public double InitNoiseSigma => _loopSigmas.Length == 0 ? 1.0 : Math.Sqrt(_loopSigmas[0] * _loopSigmas[0] + 1.0);

    /// <inheritdoc/>
    public void SetTimesteps(int steps)
    {
        if (steps < 1 || steps > Schedule.Timesteps)
        {
            throw new ArgumentOutOfRangeException(nameof(steps), steps,
                $"The number of sampling steps must lie between 1 and the schedule's {Schedule.Timesteps} timesteps; got {steps}.");
        }

        Build(steps);
    }

    /// <summary>Chooses the noise levels for <paramref name="steps"/> solver steps (calling <see cref="SetLoop"/>) and resets any state.</summary>
    protected abstract void Build(int steps);

    /// <summary>Sets the noise level of each loop position; the network timesteps follow from them unless given.</summary>
    protected void SetLoop(double[] loopSigmas, double[]? modelTimesteps = null)
    {
        _loopSigmas = loopSigmas;
        _modelTimesteps = modelTimesteps ?? loopSigmas.Select(s => SigmaSpace.SigmaToT(s, TrainingSigmas)).ToArray();
        int last = Schedule.Timesteps - 1;
        _timesteps = Array.AsReadOnly(_modelTimesteps.Select(t => Math.Clamp((int)Math.Round(t, MidpointRounding.ToEven), 0, last)).ToArray());
    }

    /// <summary>The sigmas of <paramref name="steps"/> Karras levels (EDM eq. 5) between the noise levels of the first and last timesteps of
    /// <see cref="Spacing"/> (0 and T - 1 for linspace, diffusers' default), then the final 0.</summary>
    protected double[] KarrasSigmasWithZero(int steps)
    {
        var spaced = SchedulerCore.SpacedTimesteps(Spacing, Schedule.Timesteps, steps);
        var k = SigmaSpace.KarrasSigmas(TrainingSigmas[spaced[^1]], TrainingSigmas[spaced[0]], steps);
        return k.Append(0.0).ToArray();
    }

    /// <inheritdoc/>
    public double ModelTimestep(int index) => _modelTimesteps[index];

    /// <summary>x / sqrt(sigma^2 + 1) (diffusers' scale_model_input): the VP sample x_t the network was trained on.</summary>
    public Tensor ScaleModelInput(Tensor sample, int index)
    {
        ArgumentNullException.ThrowIfNull(sample);
        double sigma = _loopSigmas[index];
        using Scalar c = Math.Sqrt(sigma * sigma + 1.0).ToScalar();
        return sample.div(c);
    }

    /// <inheritdoc/>
    public abstract SchedulerOutput StepAt(int index, Tensor modelOutput, Tensor sample, Tensor? noise = null);

    /// <summary>Not supported: a sigma-space sampler is stepped by loop position (its timesteps may repeat); use <see cref="StepAt"/>.</summary>
    public Tensor Step(Tensor modelOutput, int timestep, Tensor sample, Tensor? noise = null) =>
        throw new NotSupportedException($"{Name} works in sigma space and is stepped by loop position: call StepAt(index, ...), not Step(timestep, ...).");

    /// <inheritdoc/>
    public int PreviousTimestep(int timestep) => SchedulerCore.Previous(_timesteps, timestep, Schedule.Timesteps);

    /// <summary>The VP forward process q(x_t | x_0) of the schedule (DDPM eq. 4), not the sigma-space one.</summary>
    public Tensor AddNoise(Tensor x0, Tensor noise, Tensor timesteps) => Schedule.AddNoise(x0, noise, timesteps);

    /// <summary>x_0 + sigma noise with sigma = <see cref="LoopSigmas"/>[<paramref name="index"/>] (diffusers' Euler and Heun add_noise): the
    /// loop's sample in sigma space, which the network sees divided by sqrt(sigma^2 + 1) (the VP sample of DDPM eq. 4).</summary>
    /// <inheritdoc/>
    public Tensor AddNoiseAt(Tensor x0, Tensor noise, int index)
    {
        SchedulerCore.CheckIndex(_timesteps, index);
        return SchedulerCore.AddNoiseSigma(x0, noise, _loopSigmas[index]);
    }

    /// <summary>
    /// The denoiser D(x; sigma) = x0_hat from a network output for the input x / sqrt(sigma^2 + 1), in diffusers' form: epsilon:
    /// x - sigma eps (EDM table 1, VP column); v: -sigma / sqrt(sigma^2 + 1) v + x / (sigma^2 + 1) (Salimans &amp; Ho 2022 in sigma
    /// space); sample: the output itself (a copy). Then clipped or thresholded. A new tensor in the caller's dispose scope.
    /// </summary>
    protected Tensor Denoised(Tensor modelOutput, Tensor sample, double sigma)
    {
        var prediction = SchedulerCore.SplitOutput(modelOutput, sample).Prediction;
        var x0 = Prediction switch
        {
            PredictionType.Epsilon => SchedulerCore.Combine(1.0, sample, -sigma, prediction),
            PredictionType.VPrediction => SchedulerCore.Combine(-sigma / Math.Sqrt(sigma * sigma + 1.0), prediction, 1.0 / (sigma * sigma + 1.0), sample),
            PredictionType.Sample => prediction.clone(),
            _ => throw new InvalidOperationException($"Unknown prediction type {Prediction}."),
        };
        return SchedulerCore.ThresholdX0(x0, ClipSample, DynamicThresholding, DynamicThresholdingRatio, SampleMaxValue);
    }

    /// <summary>x + (sigmaNext - sigma) (x - x0_hat)/sigma: one Euler step of the probability-flow ODE dx/dsigma = (x - D(x; sigma))/sigma
    /// (EDM Algorithm 1, lines 4-5), computed as diffusers does (derivative, then x + derivative dt).</summary>
    protected static Tensor EulerStep(Tensor sample, Tensor derivative, double dt) => SchedulerCore.Combine(1.0, sample, dt, derivative);

    /// <summary>(x - x0_hat) / sigma: the ODE's derivative d_i (EDM Algorithm 1, line 4).</summary>
    protected static Tensor Derivative(Tensor sample, Tensor x0, double sigma)
    {
        using Scalar s = sigma.ToScalar();
        return sample.sub(x0).div_(s);
    }
}
