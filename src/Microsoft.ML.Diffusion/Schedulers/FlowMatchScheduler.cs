using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// What the flow-matching samplers share (diffusers' FlowMatchEulerDiscreteScheduler and FlowMatchHeunDiscreteScheduler with shift 1):
/// the rectified-flow path x_sigma = (1 - sigma) x_0 + sigma eps (Liu et al. 2023, eq. 1; Lipman et al. 2023, eq. 20 with sigma_min = 0 and time reversed)
/// and a network that predicts the velocity v = eps - x_0 = dx/dsigma. The sample starts as standard normal noise (sigma = 1,
/// <see cref="InitNoiseSigma"/> 1), the network sees it unscaled at the time sigma * T (a float), and the solver integrates the ODE down
/// to sigma = 0 over the noise levels sigma_i = linspace(1, 1/T, n), then 0 (diffusers' set_timesteps: linspace(T, 1, n) / T).
/// </summary>
/// <remarks>Stepped by loop position only (<see cref="StepAt"/>); <see cref="Step"/> throws. Neither RePaint nor classifier guidance
/// applies (<see cref="Capabilities"/> is None). <see cref="Timesteps"/> are sigma * T rounded, for progress reports; they may repeat.
/// Clipping and thresholding of x_0 do not apply: the update does not go through x_0.</remarks>
internal abstract class FlowMatchScheduler : IDiffusionScheduler
{
    private double[] _loopSigmas = Array.Empty<double>();
    private IReadOnlyList<int> _timesteps = Array.Empty<int>();

    /// <summary>Sets up the sampler over the model's <paramref name="schedule"/>, of which only T (the time scale) is used.</summary>
    protected FlowMatchScheduler(DiffusionSchedule schedule)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        Schedule = schedule;
    }

    /// <summary>The model's schedule; a flow model uses only its <see cref="DiffusionSchedule.Timesteps"/> T, the time scale of the
    /// network's time input (sigma * T) and of the noise levels (linspace(1, 1/T, n)).</summary>
    public DiffusionSchedule Schedule { get; }

    /// <summary>The network timesteps of the loop positions, sigma * T rounded (for progress reports); they may repeat.</summary>
    public IReadOnlyList<int> Timesteps => _timesteps;

    /// <summary>The noise level the network sees at each loop position.</summary>
    public IReadOnlyList<double> LoopSigmas => _loopSigmas;

    /// <summary>False: an ODE solver.</summary>
    public bool NeedsNoise => false;

    /// <inheritdoc/>
    public virtual int Order => 1;

    /// <summary>None: see the class remarks.</summary>
    public SchedulerCapabilities Capabilities => SchedulerCapabilities.None;

    /// <inheritdoc/>
    public abstract string Name { get; }

    /// <summary>1: the loop starts from standard normal noise, the path at sigma = 1.</summary>
    public double InitNoiseSigma => 1.0;

    /// <summary>
    /// diffusers' set_timesteps with shift 1: sigma_i = linspace(1, 1/T, <paramref name="steps"/>) (i.e. linspace(T, 1, n) / T) and a
    /// final sigma_n = 0. With <paramref name="steps"/> = 1 the single step goes from sigma = 1 to 0.
    /// </summary>
    public static double[] FlowSigmas(int trainTimesteps, int steps)
    {
        if (steps < 1 || steps > trainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(steps), steps,
                $"The number of sampling steps must lie between 1 and the model's {trainTimesteps} timesteps; got {steps}.");
        var sigmas = new double[steps + 1];
        double first = trainTimesteps, last = 1.0;                      // _sigma_to_t(sigma_max) = T, _sigma_to_t(sigma_min) = 1
        for (int i = 0; i < steps; i++)
        {
            double t = steps > 1 ? (i == steps - 1 ? last : first + i * (last - first) / (steps - 1)) : first;   // numpy linspace
            sigmas[i] = t / trainTimesteps;
        }

        sigmas[steps] = 0.0;
        return sigmas;
    }

    /// <inheritdoc/>
    public void SetTimesteps(int steps)
    {
        if (steps < 1 || steps > Schedule.Timesteps)
            throw new ArgumentOutOfRangeException(nameof(steps), steps,
                $"The number of sampling steps must lie between 1 and the schedule's {Schedule.Timesteps} timesteps; got {steps}.");
        Build(steps);
    }

    /// <summary>Chooses the noise levels for <paramref name="steps"/> steps and calls <see cref="SetLoop"/>.</summary>
    protected abstract void Build(int steps);

    /// <summary>Sets the noise level of each loop position.</summary>
    protected void SetLoop(double[] loopSigmas)
    {
        _loopSigmas = loopSigmas;
        _timesteps = Array.AsReadOnly(loopSigmas.Select(s => (int)Math.Round(s * Schedule.Timesteps, MidpointRounding.ToEven)).ToArray());
    }

    /// <summary>sigma * T, the time the network sees at loop position <paramref name="index"/> (as the network was trained: t * T).</summary>
    public double ModelTimestep(int index) => _loopSigmas[index] * Schedule.Timesteps;

    /// <summary>The sample itself: flow matching does not scale the network's input.</summary>
    public Tensor ScaleModelInput(Tensor sample, int index) => sample;

    /// <inheritdoc/>
    public abstract SchedulerOutput StepAt(int index, Tensor modelOutput, Tensor sample, Tensor? noise = null);

    /// <summary>Not supported: a flow-matching sampler is stepped by loop position; use <see cref="StepAt"/>.</summary>
    public Tensor Step(Tensor modelOutput, int timestep, Tensor sample, Tensor? noise = null) =>
        throw new NotSupportedException($"{Name} is stepped by loop position: call StepAt(index, ...), not Step(timestep, ...).");

    /// <inheritdoc/>
    public int PreviousTimestep(int timestep) => SchedulerCore.Previous(_timesteps, timestep, Schedule.Timesteps + 1);

    /// <summary>
    /// The flow forward process at integer timesteps t (0 .. T - 1): x = (1 - sigma_t) x_0 + sigma_t noise with sigma_t = (t + 1) / T,
    /// diffusers' training sigmas (linspace(1, T, T) / T) and its scale_noise.
    /// </summary>
    public Tensor AddNoise(Tensor x0, Tensor noise, Tensor timesteps)
    {
        ArgumentNullException.ThrowIfNull(x0);
        ArgumentNullException.ThrowIfNull(noise);
        ArgumentNullException.ThrowIfNull(timesteps);
        var sigmas = Enumerable.Range(1, Schedule.Timesteps).Select(t => (double)t / Schedule.Timesteps).ToArray();
        using var scope = NewDisposeScope();
        var sigma = DiffusionSchedule.ExtractAs(sigmas, timesteps.to(x0.device), (int)x0.dim(), x0.dtype);
        return (x0 + sigma * (noise - x0)).MoveToOuterDisposeScope();
    }

    /// <summary>(1 - sigma) x_0 + sigma noise with sigma = <see cref="LoopSigmas"/>[<paramref name="index"/>] (diffusers' scale_noise): the point
    /// of the straight path at that loop position, which SDEdit's image-to-image starts from.</summary>
    /// <inheritdoc/>
    public Tensor AddNoiseAt(Tensor x0, Tensor noise, int index)
    {
        SchedulerCore.CheckIndex(_timesteps, index);
        ArgumentNullException.ThrowIfNull(x0);
        ArgumentNullException.ThrowIfNull(noise);
        if (!noise.shape.SequenceEqual(x0.shape))
            throw new ArgumentException($"noise must have the shape of x0 [{string.Join(", ", x0.shape)}]; got [{string.Join(", ", noise.shape)}].", nameof(noise));
        double sigma = _loopSigmas[index];
        return SchedulerCore.Combine(1.0 - sigma, x0, sigma, noise);
    }

    /// <summary>x0_hat = x - sigma v: the clean sample the velocity <paramref name="velocity"/> points to from noise level
    /// <paramref name="sigma"/> (diffusers' "denoised"). A new tensor in the caller's dispose scope.</summary>
    protected static Tensor PredictedX0(Tensor sample, Tensor velocity, double sigma) => SchedulerCore.Combine(1.0, sample, -sigma, velocity);

    /// <summary>The velocity of a model output; a flow model has no variance channels, so the output must be shaped like the sample.</summary>
    protected static Tensor Velocity(Tensor modelOutput, Tensor sample)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        if (!modelOutput.shape.SequenceEqual(sample.shape))
            throw new ArgumentException(
                $"A flow-matching model's output (the velocity) must have the shape of the sample [{string.Join(", ", sample.shape)}]; got [{string.Join(", ", modelOutput.shape)}].",
                nameof(modelOutput));
        return modelOutput;
    }
}
