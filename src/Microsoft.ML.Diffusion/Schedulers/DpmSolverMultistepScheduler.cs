using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
/// Algorithm 2): a second-order multistep solver of the diffusion ODE written for the data prediction x_theta, as
/// diffusers' DPMSolverMultistepScheduler with algorithm_type "dpmsolver++", solver_order 2 and solver_type "midpoint", and its
/// use_karras_sigmas, use_lu_lambdas, final_sigmas_type and lower_order_final (<see cref="MultistepSettings"/>; defaults: timestep
/// levels, "zero", true). Deterministic; good samples in 10-25 network calls.
/// </summary>
/// <remarks>
/// <para>Notation (<see cref="VpMultistepScheduler"/>): alpha_i, sigma_i, lambda_i = log(alpha_i) - log(sigma_i) of loop position i,
/// h_i = lambda_{i+1} - lambda_i for the step from i to i + 1. The model's epsilon becomes x_theta = (x_t - sigma_i eps)/alpha_i,
/// optionally clipped or thresholded.</para>
/// <para>The first step (no earlier prediction) uses the first-order update (DPM-Solver++1 = DDIM), and so does the last step when it
/// lands on sigma = 0 (final_sigmas_type "zero": the update then returns x_theta itself) or, with lower_order_final, when the loop has
/// fewer than 15 steps (diffusers' rule). Every other step uses the previous step's x_theta (kept between calls, detached from dispose
/// scopes) for the second-order correction.</para>
/// <para>Spacing: diffusers' default for this solver is "linspace", but computed as round(linspace(0, T - 1, S + 1))
/// reversed without its last element 0, i.e. 999, 899, ..., 100 for T = 1000, S = 10: it never visits t = 0 and is
/// trailing spacing up to rounding. <see cref="TimestepSpacing.Linspace"/> here is Lin et al.'s S-point list that ends at
/// t = 0, which would spend one of the S network calls on the negligible step from sigma_0 to 0. The default is therefore
/// <see cref="TimestepSpacing.Trailing"/> (999, 899, ..., 99), which equals diffusers' timestep_spacing="trailing" for
/// this solver exactly and is what Lin et al. recommend.</para>
/// </remarks>
internal class DpmSolverMultistepScheduler : VpMultistepScheduler
{
    // Multistep state: x_theta of the previous loop position (owned here, outside any dispose scope).
    private Tensor? _previousX0;

    /// <summary>Creates a DPM-Solver++(2M) sampler over <paramref name="schedule"/>, visiting all T timesteps until <see cref="VpMultistepScheduler.SetTimesteps"/> is called.</summary>
    /// <param name="schedule">The forward-process schedule the model was trained with (epsilon prediction).</param>
    /// <param name="clipSample">Clamp each predicted x_0 to [-1, 1] before it enters the update.</param>
    /// <param name="spacing">How the timesteps are picked; <see cref="TimestepSpacing.Trailing"/> by default (see the remarks for how
    /// this relates to diffusers' "linspace").</param>
    /// <param name="prediction">What the model output is (epsilon, x_0 or v); converted to the data prediction x_theta.</param>
    /// <param name="dynamicThresholding">Threshold each x_theta dynamically (Imagen, section 2.3; DPM-Solver++ section 5) instead of clipping it.</param>
    public DpmSolverMultistepScheduler(DiffusionSchedule schedule, bool clipSample = true, TimestepSpacing spacing = TimestepSpacing.Trailing,
        PredictionType prediction = PredictionType.Epsilon, bool dynamicThresholding = false)
        : this(schedule, new MultistepSettings
        {
            ClipSample = clipSample, Spacing = SchedulerCore.CheckSpacing(spacing, nameof(spacing)),
            Prediction = SchedulerCore.CheckPrediction(prediction, nameof(prediction)), DynamicThresholding = dynamicThresholding,
        })
    {
    }

    /// <summary>Creates the sampler with diffusers' options (<see cref="MultistepSettings"/>).</summary>
    /// <param name="schedule">The forward-process schedule the model was trained with.</param>
    /// <param name="settings">Spacing or Karras/Lu levels, prediction, clipping or thresholding, final level, lower_order_final.</param>
    public DpmSolverMultistepScheduler(DiffusionSchedule schedule, MultistepSettings settings)
        : base(schedule, settings)
    {
    }

    /// <summary>The name in messages and in the sampler registry.</summary>
    public const string DisplayName = "DPM-Solver++(2M)";

    /// <inheritdoc/>
    public override string Name => DisplayName;

    /// <summary>False: DPM-Solver++ solves the probability-flow ODE and adds no noise.</summary>
    public override bool NeedsNoise => false;

    /// <summary>diffusers' DPM-Solver truncates the timesteps of Karras/Lu levels for the cosine (squaredcos_cap_v2) schedule.</summary>
    protected override bool RoundsSigmaTimesteps => Schedule.Kind != NoiseSchedule.Cosine || Schedule.IsCustom;

    /// <summary>
    /// The coefficients of x_{i+1} = a x_i + b D_i + c z for a step of log-SNR increment <paramref name="h"/> from sigma_s to
    /// (alpha_t, sigma_t): Algorithm 2 of DPM-Solver++ (the exact solution of the data-prediction ODE
    /// x_t = (sigma_t/sigma_s) x_s + sigma_t int e^lambda x_theta dlambda with x_theta ~ D_i): a = sigma_t/sigma_s,
    /// b = -alpha_t (e^{-h} - 1), no noise.
    /// </summary>
    protected virtual (double Sample, double Data, double Noise) Coefficients(double h, double sigmaS, double alphaT, double sigmaT) =>
        (sigmaT / sigmaS, -alphaT * (Math.Exp(-h) - 1.0), 0.0);

    /// <summary>First order at the last position when it lands on sigma = 0, or with lower_order_final below 15 steps (diffusers).</summary>
    private bool LowerOrderAt(int index) =>
        IsLast(index) && (Settings.FinalSigmasType == FinalSigmasType.Zero || (Settings.LowerOrderFinal && Count < 15));

    /// <inheritdoc/>
    protected override void ClearHistory()
    {
        _previousX0?.Dispose();
        _previousX0 = null;
    }

    /// <summary>One DPM-Solver++ step: first order at the first position and where <see cref="LowerOrderAt"/>, second order
    /// (Algorithm 2, multistep) otherwise.</summary>
    protected override SchedulerOutput Update(int index, Tensor modelOutput, Tensor sample, Tensor? noise, bool withX0)
    {
        // Per-step scalars in float64: s0 = position i (current), t = position i + 1 (target).
        var (_, sigmaS0, lambdaS0) = Level(index);
        var (alphaT, sigmaT, lambdaT) = Level(index + 1);
        bool toData = sigmaT == 0;                                                  // lands on alpha = 1, sigma = 0: e^{-h} = 0
        double h = lambdaT - lambdaS0;                                              // h_i = lambda_{i+1} - lambda_i
        var (sampleCoef, dataCoef, noiseCoef) = Coefficients(h, sigmaS0, alphaT, sigmaT);

        // Second order needs the prediction of the position before; the first step, a fresh loop and LowerOrderAt use first order.
        bool secondOrder = !toData && !LowerOrderAt(index) && Compatible(_previousX0, sample);
        double dCoefX0 = 1.0, dCoefPrevX0 = 0.0;
        if (secondOrder)
        {
            var (_, _, lambdaS1) = Level(index - 1);
            double r = (lambdaS0 - lambdaS1) / h;                                   // r_i = h_{i-1} / h_i
            dCoefX0 = 1.0 + 1.0 / (2.0 * r);                                        // D_i = (1 + 1/(2 r_i)) x_theta(i)
            dCoefPrevX0 = -1.0 / (2.0 * r);                                         //       - 1/(2 r_i) x_theta(i - 1)
        }

        Tensor? z = noiseCoef > 0 ? SchedulerCore.CheckNoise(noise, sample, Name) : null;
        Tensor xPrev;
        Tensor x0;
        using (var scope = NewDisposeScope())
        {
            x0 = DataPrediction(modelOutput, sample, index);

            // Algorithm 2: D_i = x_theta(i) for first order, the midpoint combination above for second order.
            var d = secondOrder ? SchedulerCore.Combine(dCoefX0, x0, dCoefPrevX0, _previousX0!) : x0;

            // x_{i+1} = a x_i + b D_i (+ c z); at sigma = 0 the update is x_theta itself.
            if (toData)
            {
                xPrev = x0.MoveToOuterDisposeScope();
            }
            else
            {
                var next = SchedulerCore.Combine(sampleCoef, sample, dataCoef, d);
                if (z is not null)
                {
                    SchedulerCore.AddScaled_(next, noiseCoef, z);
                }

                xPrev = next.MoveToOuterDisposeScope();
                x0.DetachFromDisposeScope();
            }
        }

        // Keep x_theta(i) for the next step (Algorithm 2: Q <- x_theta); nothing after the last position.
        _previousX0?.Dispose();
        _previousX0 = null;
        if (toData)
        {
            return new SchedulerOutput(xPrev, xPrev);
        }

        var predicted = withX0 ? x0.clone() : null!;
        if (IsLast(index))
        {
            x0.Dispose();
        }
        else
        {
            _previousX0 = x0;
        }

        return new SchedulerOutput(xPrev, predicted);
    }
}
