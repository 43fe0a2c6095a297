using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// Ancestral sampling of DDPM (Ho et al. 2020, Algorithm 2, eq. 6-7 and 11 via the predicted x_0), with diffusers'
/// generalisation to fewer steps than T: each step uses alpha_bar_t and alpha_bar_prev of the previous visited
/// timestep, so beta'_t = 1 - alpha_bar_t/alpha_bar_prev plays the part of beta_t. "Previous" is the next element of
/// <see cref="Timesteps"/>, so any <see cref="TimestepSpacing"/> works, uniform or not.
/// </summary>
public sealed class DdpmScheduler : IDiffusionScheduler
{
    private IReadOnlyList<int> _timesteps;

    /// <summary>Creates a DDPM sampler over <paramref name="schedule"/>, visiting all T timesteps until <see cref="SetTimesteps"/> is called.</summary>
    /// <param name="schedule">The forward-process schedule the model was trained with.</param>
    /// <param name="clipSample">Clamp the predicted x_0 to [-1, 1] before forming the posterior mean.</param>
    /// <param name="variance">The reverse-step variance (<see cref="DdpmVariance"/>).</param>
    /// <param name="spacing">How <see cref="SetTimesteps"/> picks the timesteps; <see cref="TimestepSpacing.Leading"/> as in diffusers' DDPMScheduler.</param>
    /// <param name="prediction">What the model output is (epsilon, x_0 or v); converted to x_0 before the posterior mean.</param>
    /// <param name="dynamicThresholding">Threshold the predicted x_0 dynamically (Imagen, section 2.3) instead of clipping it.</param>
    public DdpmScheduler(DiffusionSchedule schedule, bool clipSample = true, DdpmVariance variance = DdpmVariance.FixedSmall,
        TimestepSpacing spacing = TimestepSpacing.Leading, PredictionType prediction = PredictionType.Epsilon, bool dynamicThresholding = false)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        if (!Enum.IsDefined(variance))
        {
            throw new ArgumentOutOfRangeException(nameof(variance), variance,
                $"Unknown DDPM variance {variance}; expected one of {string.Join(", ", Enum.GetNames<DdpmVariance>())}.");
        }

        Schedule = schedule;
        ClipSample = clipSample;
        Variance = variance;
        Spacing = SchedulerCore.CheckSpacing(spacing, nameof(spacing));
        Prediction = SchedulerCore.CheckPrediction(prediction, nameof(prediction));
        DynamicThresholding = dynamicThresholding;
        _timesteps = SchedulerCore.SpacedTimesteps(spacing, schedule.Timesteps, schedule.Timesteps);
    }

    /// <inheritdoc/>
    public DiffusionSchedule Schedule { get; }

    /// <summary>Whether the predicted x_0 is clamped to [-1, 1].</summary>
    public bool ClipSample { get; }

    /// <summary>The reverse-step variance.</summary>
    public DdpmVariance Variance { get; }

    /// <summary>How <see cref="SetTimesteps"/> picks the timesteps.</summary>
    public TimestepSpacing Spacing { get; }

    /// <summary>What the model output passed to <see cref="Step"/> is.</summary>
    public PredictionType Prediction { get; }

    /// <summary>Whether the predicted x_0 is dynamically thresholded (replacing <see cref="ClipSample"/>).</summary>
    public bool DynamicThresholding { get; }

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

    /// <inheritdoc/>
    public Tensor Step(Tensor modelOutput, int timestep, Tensor sample, Tensor? noise = null)
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

        // Reverse-step variance: beta_tilde (DDPM eq. 7) or beta'_t (section 3.2); no noise when landing on x_0.
        double variance = prev < 0 ? 0.0 : Variance switch
        {
            DdpmVariance.FixedSmall => Math.Max(oneMinusAbarPrev / oneMinusAbarT * betaT, 1e-20),
            _ => betaT,
        };

        Tensor? z = variance > 0 ? SchedulerCore.CheckNoise(noise, sample, nameof(DdpmScheduler)) : null;

        using var scope = NewDisposeScope();
        // DDPM eq. 15 solved for x_0 (epsilon prediction): x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t);
        // x_0 and v outputs are converted by the same helper.
        var (x0, _) = SchedulerCore.ToX0AndEps(modelOutput, sample, abarT, Prediction);
        x0 = SchedulerCore.ThresholdX0(x0, ClipSample, DynamicThresholding);

        var xPrev = SchedulerCore.Combine(coef1, x0, coef2, sample);    // posterior mean mu_tilde_t (eq. 7)
        if (z is not null)
        {
            SchedulerCore.AddScaled_(xPrev, Math.Sqrt(variance), z);    // Algorithm 2, line 4: + sigma_t z
        }

        return xPrev.MoveToOuterDisposeScope();
    }
}
