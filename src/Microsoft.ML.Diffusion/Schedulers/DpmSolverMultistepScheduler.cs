using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
/// Algorithm 2): a second-order multistep solver of the diffusion ODE written for the data prediction x_theta, as
/// diffusers' DPMSolverMultistepScheduler with algorithm_type "dpmsolver++", solver_order 2, solver_type "midpoint",
/// lower_order_final and final_sigmas_type "zero". Deterministic; good samples in 10-25 network calls.
/// </summary>
/// <remarks>
/// <para>Notation (VP diffusion, DDPM's alpha_bar): alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t),
/// lambda_t = log(alpha_t) - log(sigma_t) (half the log-SNR), h_i = lambda_{t_i} - lambda_{t_{i-1}} for a step from
/// t_{i-1} to t_i. The model's epsilon becomes x_theta = (x_t - sigma_t eps)/alpha_t, optionally clipped to [-1, 1].</para>
/// <para>The first step (no earlier prediction) and the last step use the first-order update (DPM-Solver++1 = DDIM);
/// the last step goes to alpha = 1, sigma = 0 (x_0), where the update returns x_theta itself (diffusers makes the final
/// step first order whenever the final sigma is zero; its lower_order_final rule for fewer than 15 steps changes nothing
/// else at order 2). Every other step uses the previous step's x_theta (kept here between calls, detached from dispose
/// scopes) for the second-order correction.
/// The state is used only when the previous <see cref="Step"/> landed on the current timestep with a sample of the same
/// shape, so a new loop that starts at the first timestep begins with a first-order step even without
/// <see cref="SetTimesteps"/>; <see cref="SetTimesteps"/> and <see cref="Reset"/> clear it.</para>
/// <para>Spacing: diffusers' default for this solver is "linspace", but computed as round(linspace(0, T - 1, S + 1))
/// reversed without its last element 0, i.e. 999, 899, ..., 100 for T = 1000, S = 10: it never visits t = 0 and is
/// trailing spacing up to rounding. <see cref="TimestepSpacing.Linspace"/> here is Lin et al.'s S-point list that ends at
/// t = 0, which would spend one of the S network calls on the negligible step from sigma_0 to 0. The default is therefore
/// <see cref="TimestepSpacing.Trailing"/> (999, 899, ..., 99), which equals diffusers' timestep_spacing="trailing" for
/// this solver exactly and is what Lin et al. recommend.</para>
/// </remarks>
internal sealed class DpmSolverMultistepScheduler : IDiffusionScheduler, IDisposable
{
    private IReadOnlyList<int> _timesteps;

    // Multistep state: x_theta(x_{t_{i-1}}, t_{i-1}) predicted by the previous Step (owned here, outside any dispose
    // scope), the timestep t_{i-1} it was predicted at, and the timestep t_i that step landed on.
    private Tensor? _previousX0;
    private int _previousTimestep;
    private int _landedOn;

    /// <summary>Creates a DPM-Solver++(2M) sampler over <paramref name="schedule"/>, visiting all T timesteps until <see cref="SetTimesteps"/> is called.</summary>
    /// <param name="schedule">The forward-process schedule the model was trained with (epsilon prediction).</param>
    /// <param name="clipSample">Clamp each predicted x_0 to [-1, 1] before it enters the update.</param>
    /// <param name="spacing">How <see cref="SetTimesteps"/> picks the timesteps; <see cref="TimestepSpacing.Trailing"/>
    /// by default (see the remarks for how this relates to diffusers' "linspace").</param>
    /// <param name="prediction">What the model output is (epsilon, x_0 or v); converted to the data prediction x_theta.</param>
    /// <param name="dynamicThresholding">Threshold each x_theta dynamically (Imagen, section 2.3; DPM-Solver++ section 5) instead of clipping it.</param>
    public DpmSolverMultistepScheduler(DiffusionSchedule schedule, bool clipSample = true, TimestepSpacing spacing = TimestepSpacing.Trailing,
        PredictionType prediction = PredictionType.Epsilon, bool dynamicThresholding = false)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        Schedule = schedule;
        ClipSample = clipSample;
        Spacing = SchedulerCore.CheckSpacing(spacing, nameof(spacing));
        Prediction = SchedulerCore.CheckPrediction(prediction, nameof(prediction));
        DynamicThresholding = dynamicThresholding;
        _timesteps = SchedulerCore.SpacedTimesteps(spacing, schedule.Timesteps, schedule.Timesteps);
        Reset();
    }

    /// <summary>The name in messages and in the sampler registry.</summary>
    public const string DisplayName = "DPM-Solver++(2M)";

    /// <inheritdoc/>
    public string Name => DisplayName;

    /// <inheritdoc/>
    public DiffusionSchedule Schedule { get; }

    /// <summary>Whether the predicted x_0 is clamped to [-1, 1].</summary>
    public bool ClipSample { get; }

    /// <summary>How <see cref="SetTimesteps"/> picks the timesteps.</summary>
    public TimestepSpacing Spacing { get; }

    /// <summary>What the model output passed to <see cref="Step"/> is.</summary>
    public PredictionType Prediction { get; }

    /// <summary>Whether each x_theta is dynamically thresholded (replacing <see cref="ClipSample"/>).</summary>
    public bool DynamicThresholding { get; }

    /// <inheritdoc/>
    public IReadOnlyList<int> Timesteps => _timesteps;

    /// <summary>Always false: DPM-Solver++ solves the probability-flow ODE and adds no noise.</summary>
    public bool NeedsNoise => false;

    /// <inheritdoc/>
    public void SetTimesteps(int steps)
    {
        _timesteps = SchedulerCore.SpacedTimesteps(Spacing, Schedule.Timesteps, steps);
        Reset();
    }

    /// <summary>Forgets the previous x_0 prediction (and frees its tensor): the next <see cref="Step"/> is first order.</summary>
    public void Reset()
    {
        _previousX0?.Dispose();
        _previousX0 = null;
        _previousTimestep = int.MinValue;
        _landedOn = int.MinValue;
    }

    /// <summary>Same as <see cref="Reset"/>; the scheduler stays usable.</summary>
    public void Dispose() => Reset();

    /// <inheritdoc/>
    public int PreviousTimestep(int timestep) => SchedulerCore.Previous(_timesteps, timestep, Schedule.Timesteps);

    /// <inheritdoc/>
    public Tensor AddNoise(Tensor x0, Tensor noise, Tensor timesteps) => Schedule.AddNoise(x0, noise, timesteps);

    /// <summary>
    /// One DPM-Solver++ step from <paramref name="timestep"/> to <see cref="PreviousTimestep"/>: first order at the first
    /// and the last step, second order (Algorithm 2) otherwise. <paramref name="noise"/> is ignored.
    /// </summary>
    /// <inheritdoc/>
    public Tensor Step(Tensor modelOutput, int timestep, Tensor sample, Tensor? noise = null) =>
        StepCore(modelOutput, timestep, sample, withX0: false).PrevSample;

    /// <summary>As <see cref="Step"/> at Timesteps[<paramref name="index"/>]; the predicted x_0 is a copy of the x_theta kept for
    /// the next step (x_prev itself on the last step).</summary>
    /// <inheritdoc/>
    public SchedulerOutput StepAt(int index, Tensor modelOutput, Tensor sample, Tensor? noise = null) =>
        StepCore(modelOutput, _timesteps[index], sample, withX0: true);

    /// <summary>Neither: RePaint jumps back in time, which a multistep solver cannot follow; classifier guidance by the shifted
    /// noise prediction (Algorithm 2) applies.</summary>
    public SchedulerCapabilities Capabilities => SchedulerCapabilities.ClassifierGuidance;

    /// <summary>The step; <see cref="SchedulerOutput.PredictedX0"/> is null! unless <paramref name="withX0"/>.</summary>
    private SchedulerOutput StepCore(Tensor modelOutput, int timestep, Tensor sample, bool withX0)
    {
        SchedulerCore.CheckStepArguments(modelOutput, sample);
        int prev = PreviousTimestep(timestep);

        // Per-step scalars in float64. s0 = t_{i-1} (current), t = t_i (target).
        var (_, sigmaS0, lambdaS0) = AlphaSigmaLambda(timestep);
        bool final = prev < 0;
        // final_sigmas_type "zero": the last step lands on alpha = 1, sigma = 0 (lambda = +inf, e^{-h} = 0).
        var (alphaT, sigmaT, lambdaT) = final ? (1.0, 0.0, double.PositiveInfinity) : AlphaSigmaLambda(prev);
        double h = lambdaT - lambdaS0;                                              // h_i = lambda_{t_i} - lambda_{t_{i-1}}
        double sampleCoef = sigmaT / sigmaS0;                                       // sigma_{t_i} / sigma_{t_{i-1}}
        double dataCoef = -alphaT * (Math.Exp(-h) - 1.0);                           // -alpha_{t_i} (e^{-h_i} - 1)

        // Second order needs the prediction of the step that landed here; the first step, the final step
        // (lower_order_final, as diffusers with final sigma 0) and a fresh loop use first order.
        bool secondOrder = !final
            && _previousX0 is not null
            && _landedOn == timestep
            && _previousX0.shape.SequenceEqual(sample.shape)
            && _previousX0.dtype == sample.dtype
            && _previousX0.device_type == sample.device_type
            && _previousX0.device_index == sample.device_index;

        double dCoefX0 = 1.0, dCoefPrevX0 = 0.0;
        if (secondOrder)
        {
            var (_, _, lambdaS1) = AlphaSigmaLambda(_previousTimestep);
            double r = (lambdaS0 - lambdaS1) / h;                                   // r_i = h_{i-1} / h_i
            dCoefX0 = 1.0 + 1.0 / (2.0 * r);                                        // D_i = (1 + 1/(2 r_i)) x_theta(t_{i-1})
            dCoefPrevX0 = -1.0 / (2.0 * r);                                         //       - 1/(2 r_i) x_theta(t_{i-2})
        }

        Tensor xPrev;
        Tensor x0;
        using (var scope = NewDisposeScope())
        {
            // Data prediction from epsilon (DDPM eq. 4 solved for x_0): x_theta = (x_t - sigma_t eps)/alpha_t; x_0 and v
            // outputs are converted by the same helper (a new tensor, never modelOutput, since it is kept between steps).
            // A learned-variance output (2C channels) contributes only its prediction half.
            var prediction = SchedulerCore.SplitOutput(modelOutput, sample).Prediction;
            (x0, _) = SchedulerCore.ToX0AndEps(prediction, sample, Schedule.AlphaBar(timestep), Prediction);
            x0 = SchedulerCore.ThresholdX0(x0, ClipSample, DynamicThresholding);

            // Algorithm 2: D_i = x_theta(t_{i-1}) for first order, the midpoint combination above for second order.
            var d = secondOrder ? SchedulerCore.Combine(dCoefX0, x0, dCoefPrevX0, _previousX0!) : x0;

            // DPM-Solver++ (Algorithm 2; first order = DPM-Solver++1 = DDIM), from the exact solution of the data-prediction ODE
            // x_t = (sigma_t/sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda x_theta dlambda with x_theta ~ D_i:
            // x_{t_i} = (sigma_{t_i}/sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D_i.
            // At the final step sigma_{t_i} = 0 and e^{-h} = 0, so the update is x_theta itself.
            if (final)
            {
                xPrev = x0.MoveToOuterDisposeScope();
            }
            else
            {
                xPrev = SchedulerCore.Combine(sampleCoef, sample, dataCoef, d).MoveToOuterDisposeScope();
                x0.DetachFromDisposeScope();
            }
        }

        // Keep x_theta(t_{i-1}) for the next step (Algorithm 2: Q <- x_theta); nothing after the final step.
        _previousX0?.Dispose();
        _previousX0 = final ? null : x0;
        _previousTimestep = final ? int.MinValue : timestep;
        _landedOn = final ? int.MinValue : prev;
        return new SchedulerOutput(xPrev, final ? xPrev : withX0 ? x0.clone() : null!);
    }

    /// <summary>alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t) and lambda_t = log(alpha_t) - log(sigma_t), in float64.</summary>
    private (double Alpha, double Sigma, double Lambda) AlphaSigmaLambda(int timestep)
    {
        double abar = Schedule.AlphaBar(timestep);
        double alpha = Math.Sqrt(abar);
        double sigma = Math.Sqrt(1.0 - abar);
        return (alpha, sigma, Math.Log(alpha) - Math.Log(sigma));
    }
}
