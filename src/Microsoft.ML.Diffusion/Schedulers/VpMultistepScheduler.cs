using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// What the multistep solvers on VP noise levels share (DPM-Solver++(2M) and its SDE variant, UniPC), with the semantics of
/// diffusers' DPMSolverMultistepScheduler and UniPCMultistepScheduler: the loop's sample is DDPM's x_t (unit initial noise, no input
/// scaling), each loop position i has a noise level alpha_bar_i and an integer network timestep, and the last step lands on a final
/// level (<see cref="FinalSigmasType"/>). A subclass implements the update from position i to i + 1 and keeps the earlier data
/// predictions it needs.
/// </summary>
/// <remarks>
/// <para>Notation: alpha_i = sqrt(alpha_bar_i), sigma_i = sqrt(1 - alpha_bar_i), lambda_i = log(alpha_i) - log(sigma_i) (half the
/// log-SNR); the final level "zero" is alpha = 1, sigma = 0, lambda = +inf.</para>
/// <para>Noise levels: by default those of the timesteps of <see cref="MultistepSettings.Spacing"/> (alpha_bar_t of the schedule, as
/// before Karras sigmas existed). With Karras sigmas (Karras et al. 2022, eq. 5, rho = 7) or Lu lambdas (uniform in lambda, Lu et al.
/// 2022) the VE noise levels s_i = sigma_i / alpha_i span the schedule's whole range [s_0, s_{T-1}], alpha_bar_i = 1 / (s_i^2 + 1), and the
/// network timestep of each is diffusers' _sigma_to_t (linear in log s between training timesteps) made an integer (rounded; see
/// <see cref="RoundsSigmaTimesteps"/>), so timesteps may repeat near t = 0.</para>
/// <para>State: the kept predictions are used only when the previous step landed on the current loop position; a new loop (position 0,
/// or any jump) starts afresh, and <see cref="SetTimesteps"/> and <see cref="Reset"/> clear them.</para>
/// </remarks>
internal abstract class VpMultistepScheduler : IDiffusionScheduler, IDisposable
{
    private IReadOnlyList<int> _timesteps = Array.Empty<int>();
    private double[] _alphaBars = Array.Empty<double>();   // one per loop position, then the final level
    private int _landedOn = -1;                             // the loop position the last step landed on (-1: none)

    /// <summary>Validates the settings and visits all T timesteps until <see cref="SetTimesteps"/> is called.</summary>
    protected VpMultistepScheduler(DiffusionSchedule schedule, MultistepSettings settings)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        ArgumentNullException.ThrowIfNull(settings);
        SchedulerCore.CheckSpacing(settings.Spacing, nameof(settings));
        SchedulerCore.CheckPrediction(settings.Prediction, nameof(settings));
        SchedulerCore.CheckThreshold(settings.DynamicThresholdingRatio, settings.SampleMaxValue);
        if (!Enum.IsDefined(settings.FinalSigmasType))
            throw new ArgumentOutOfRangeException(nameof(settings), settings.FinalSigmasType,
                $"Unknown final sigmas type {settings.FinalSigmasType}; expected one of {string.Join(", ", Enum.GetNames<FinalSigmasType>())}.");
        if (settings.UseKarrasSigmas && settings.UseLuLambdas)
            throw new ArgumentException("Use Karras sigmas or Lu lambdas, not both (diffusers' use_karras_sigmas and use_lu_lambdas).", nameof(settings));
        if (UsesSigmaLevels(settings) && schedule.Timesteps < 2)
            throw new ArgumentOutOfRangeException(nameof(schedule), schedule.Timesteps, "Karras sigmas and Lu lambdas need a schedule of at least 2 timesteps.");
        Schedule = schedule;
        Settings = settings;
        SetTimesteps(schedule.Timesteps);   // virtual members used here read only Schedule and Settings
    }

    /// <inheritdoc/>
    public DiffusionSchedule Schedule { get; }

    /// <summary>The solver's configuration.</summary>
    public MultistepSettings Settings { get; }

    /// <summary>Whether each predicted x_0 is clamped to [-1, 1].</summary>
    public bool ClipSample => Settings.ClipSample;

    /// <summary>How <see cref="SetTimesteps"/> picks the timesteps when the noise levels follow them.</summary>
    public TimestepSpacing Spacing => Settings.Spacing;

    /// <summary>What the model output passed to a step is.</summary>
    public PredictionType Prediction => Settings.Prediction;

    /// <summary>Whether each predicted x_0 is dynamically thresholded (replacing <see cref="ClipSample"/>).</summary>
    public bool DynamicThresholding => Settings.DynamicThresholding;

    /// <inheritdoc/>
    public IReadOnlyList<int> Timesteps => _timesteps;

    /// <summary>alpha_bar of each loop position, then of the level the last step lands on (1 for <see cref="FinalSigmasType.Zero"/>).</summary>
    public IReadOnlyList<double> AlphaBars => _alphaBars;

    /// <inheritdoc/>
    public abstract bool NeedsNoise { get; }

    /// <inheritdoc/>
    public abstract string Name { get; }

    /// <summary>
    /// What diffusers' multistep options configure (<see cref="SchedulerCapabilities.MultistepOptions"/>); classifier guidance too unless
    /// the noise levels are Karras sigmas or Lu lambdas (the guided noise prediction reads alpha_bar at the integer timestep, which then
    /// only approximates the level the solver uses).
    /// </summary>
    public SchedulerCapabilities Capabilities =>
        SchedulerCapabilities.MultistepOptions | (UsesSigmaLevels(Settings) ? SchedulerCapabilities.None : SchedulerCapabilities.ClassifierGuidance);

    /// <summary>The network timestep of a loop position: an element of <see cref="Timesteps"/>.</summary>
    /// <param name="index">A loop position.</param>
    public double ModelTimestep(int index) => _timesteps[index];

    /// <summary>
    /// Whether the network timestep of a Karras or Lu noise level is rounded (half to even) or truncated: diffusers' DPM-Solver rounds
    /// except for the squaredcos_cap_v2 (cosine) schedule, whose timesteps it truncates when it casts them to int64; UniPC always rounds.
    /// </summary>
    protected virtual bool RoundsSigmaTimesteps => true;

    /// <inheritdoc/>
    public void SetTimesteps(int steps)
    {
        if (steps < 1 || steps > Schedule.Timesteps)
            throw new ArgumentOutOfRangeException(nameof(steps), steps,
                $"The number of sampling steps must lie between 1 and the schedule's {Schedule.Timesteps} timesteps; got {steps}.");
        Build(steps);
        Reset();
    }

    /// <summary>Forgets the kept predictions (and frees their tensors): the next step starts a loop.</summary>
    public void Reset()
    {
        _landedOn = -1;
        ClearHistory();
    }

    /// <summary>Same as <see cref="Reset"/>; the scheduler stays usable.</summary>
    public void Dispose() => Reset();

    /// <inheritdoc/>
    public int PreviousTimestep(int timestep) => SchedulerCore.Previous(_timesteps, timestep, Schedule.Timesteps);

    /// <inheritdoc/>
    public Tensor AddNoise(Tensor x0, Tensor noise, Tensor timesteps) => Schedule.AddNoise(x0, noise, timesteps);

    /// <summary>DDPM eq. 4 at the noise level of loop position <paramref name="index"/> (<see cref="AlphaBars"/>: a Karras or Lu level
    /// itself, not its rounded timestep's, as diffusers' add_noise reads sigmas[step_index]).</summary>
    /// <inheritdoc/>
    public Tensor AddNoiseAt(Tensor x0, Tensor noise, int index)
    {
        SchedulerCore.CheckIndex(_timesteps, index);
        return SchedulerCore.AddNoiseVp(x0, noise, _alphaBars[index]);
    }

    /// <summary>The step at the loop position of <paramref name="timestep"/> (the position the last step landed on when its timestep is
    /// this one, else the first position with it).</summary>
    /// <inheritdoc/>
    public Tensor Step(Tensor modelOutput, int timestep, Tensor sample, Tensor? noise = null) =>
        StepCore(IndexOf(timestep), modelOutput, sample, noise, withX0: false).PrevSample;

    /// <summary>The step from loop position <paramref name="index"/> to the next (or to the final level after the last); the predicted
    /// x_0 is the data prediction of this position (x_prev itself on a step that lands on sigma = 0).</summary>
    /// <inheritdoc/>
    public SchedulerOutput StepAt(int index, Tensor modelOutput, Tensor sample, Tensor? noise = null)
    {
        if (index < 0 || index >= _timesteps.Count)
            throw new ArgumentOutOfRangeException(nameof(index), index, $"The loop position must lie between 0 and {_timesteps.Count - 1}; got {index}.");
        return StepCore(index, modelOutput, sample, noise, withX0: true);
    }

    private SchedulerOutput StepCore(int index, Tensor modelOutput, Tensor sample, Tensor? noise, bool withX0)
    {
        SchedulerCore.CheckStepArguments(modelOutput, sample);
        if (_landedOn != index)
        {
            ClearHistory();                                 // a new loop or a jump: the kept predictions belong elsewhere
        }

        var output = Update(index, modelOutput, sample, noise, withX0);
        _landedOn = IsLast(index) ? -1 : index + 1;
        if (_landedOn < 0)
        {
            ClearHistory();
        }

        return output;
    }

    /// <summary>
    /// The update from loop position <paramref name="index"/> to <paramref name="index"/> + 1. The kept predictions are those of the
    /// positions just before (none at the start of a loop). <see cref="SchedulerOutput.PredictedX0"/> may be null! unless
    /// <paramref name="withX0"/>.
    /// </summary>
    protected abstract SchedulerOutput Update(int index, Tensor modelOutput, Tensor sample, Tensor? noise, bool withX0);

    /// <summary>Disposes and forgets the kept predictions.</summary>
    protected abstract void ClearHistory();

    /// <summary>Whether <paramref name="index"/> is the last loop position.</summary>
    protected bool IsLast(int index) => index == _timesteps.Count - 1;

    /// <summary>The number of loop positions.</summary>
    protected int Count => _timesteps.Count;

    /// <summary>alpha_i, sigma_i and lambda_i of loop position <paramref name="position"/> (0 .. Count; Count is the final level), in float64.</summary>
    protected (double Alpha, double Sigma, double Lambda) Level(int position)
    {
        double abar = _alphaBars[position];
        if (abar >= 1.0)
        {
            return (1.0, 0.0, double.PositiveInfinity);   // final_sigmas_type "zero"
        }

        double alpha = Math.Sqrt(abar);
        double sigma = Math.Sqrt(1.0 - abar);
        return (alpha, sigma, Math.Log(alpha) - Math.Log(sigma));
    }

    /// <summary>
    /// The data prediction x_theta at loop position <paramref name="index"/>: the model output converted to x_0 (DDPM eq. 4 solved for
    /// x_0 for epsilon: (x_t - sigma_i eps)/alpha_i; x_0 and v likewise), then clipped or thresholded. A new tensor in the caller's
    /// dispose scope, never <paramref name="modelOutput"/> itself; a learned-variance output contributes its prediction half only.
    /// </summary>
    protected Tensor DataPrediction(Tensor modelOutput, Tensor sample, int index)
    {
        var prediction = SchedulerCore.SplitOutput(modelOutput, sample).Prediction;
        var (x0, _) = SchedulerCore.ToX0AndEps(prediction, sample, _alphaBars[index], Settings.Prediction);
        return SchedulerCore.ThresholdX0(x0, Settings.ClipSample, Settings.DynamicThresholding, Settings.DynamicThresholdingRatio, Settings.SampleMaxValue);
    }

    /// <summary>Whether a kept tensor can enter an update of <paramref name="sample"/> (same shape, dtype and device).</summary>
    protected static bool Compatible(Tensor? kept, Tensor sample) =>
        kept is not null
        && kept.shape.SequenceEqual(sample.shape)
        && kept.dtype == sample.dtype
        && kept.device_type == sample.device_type
        && kept.device_index == sample.device_index;

    private static bool UsesSigmaLevels(MultistepSettings settings) => settings.UseKarrasSigmas || settings.UseLuLambdas;

    private int IndexOf(int timestep)
    {
        SchedulerCore.CheckTimestep(timestep, Schedule.Timesteps);
        if (_landedOn >= 0 && _timesteps[_landedOn] == timestep)
        {
            return _landedOn;
        }

        for (int i = 0; i < _timesteps.Count; i++)
        {
            if (_timesteps[i] == timestep)
            {
                return i;
            }
        }

        throw new ArgumentOutOfRangeException(nameof(timestep), timestep,
            $"{Name} steps from its own timesteps ({_timesteps[0]} .. {_timesteps[^1]}, set by SetTimesteps); {timestep} is not one of them.");
    }

    /// <summary>Chooses the loop's timesteps and noise levels for <paramref name="steps"/> steps (see the class remarks).</summary>
    private void Build(int steps)
    {
        int T = Schedule.Timesteps;
        bool zero = Settings.FinalSigmasType == FinalSigmasType.Zero;
        if (!UsesSigmaLevels(Settings))
        {
            _timesteps = SchedulerCore.SpacedTimesteps(Settings.Spacing, T, steps);
            // final_sigmas_type: "zero" lands on alpha_bar = 1; "sigma_min" on alpha_bar_0, the schedule's first level.
            _alphaBars = _timesteps.Select(Schedule.AlphaBar).Append(zero ? 1.0 : Schedule.AlphaBar(0)).ToArray();
            return;
        }

        var training = SigmaSpace.TrainingSigmas(Schedule);
        double sMin = training[0], sMax = training[T - 1];
        var levels = Settings.UseKarrasSigmas ? SigmaSpace.KarrasSigmas(sMin, sMax, steps) : LuSigmas(sMin, sMax, steps);
        _timesteps = Array.AsReadOnly(levels.Select(s => ToTimestep(SigmaSpace.SigmaToT(s, training))).ToArray());
        // alpha_bar = 1 / (s^2 + 1); "sigma_min" lands on s_0 itself, the Karras/Lu list's last level (a step of h = 0 there).
        _alphaBars = levels.Select(SigmaSpace.AlphaBar).Append(zero ? 1.0 : SigmaSpace.AlphaBar(sMin)).ToArray();
    }

    private int ToTimestep(double t) =>
        RoundsSigmaTimesteps ? (int)Math.Round(t, MidpointRounding.ToEven) : (int)Math.Truncate(t);

    /// <summary>
    /// diffusers' use_lu_lambdas: n noise levels whose log s is evenly spaced from log s_max down to log s_min (n = 1 gives s_max), i.e.
    /// evenly spaced lambda = -log s (Lu et al. 2022, "DPM-Solver", the uniform logSNR step size).
    /// </summary>
    internal static double[] LuSigmas(double sMin, double sMax, int n)
    {
        double hi = Math.Log(sMax), lo = Math.Log(sMin);
        var sigmas = new double[n];
        for (int i = 0; i < n; i++)
        {
            double ramp = n > 1 ? (double)i / (n - 1) : 0.0;            // numpy linspace(0, 1, n)
            sigmas[i] = Math.Exp(hi + ramp * (lo - hi));
        }

        return sigmas;
    }
}
