using Microsoft.ML.Diffusion.Schedules;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// SDE-DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", the solvers of the diffusion SDE in data-prediction form), as diffusers'
/// DPMSolverMultistepScheduler with algorithm_type "sde-dpmsolver++", solver_order 2 and solver_type "midpoint": the multistep
/// second-order update of <see cref="DpmSolverMultistepScheduler"/> with the exact solution of the reverse SDE's linear part, which
/// contracts the sample by e^{-h} more and adds fresh noise. Stochastic; one network call per step.
/// </summary>
/// <remarks>
/// With h_i = lambda_{i+1} - lambda_i, x_{i+1} = (sigma_{i+1}/sigma_i) e^{-h_i} x_i + alpha_{i+1} (1 - e^{-2 h_i}) D_i
/// + sigma_{i+1} sqrt(1 - e^{-2 h_i}) z, where D_i is x_theta(i) (first order: SDE-DPM-Solver++1) or the midpoint combination
/// (1 + 1/(2 r_i)) x_theta(i) - 1/(2 r_i) x_theta(i - 1) with r_i = h_{i-1}/h_i (second order). The noise term is
/// the variance the SDE accumulates between the two levels. The last step onto sigma = 0 returns x_theta and takes no noise.
/// </remarks>
internal sealed class DpmSolverSdeScheduler : DpmSolverMultistepScheduler
{
    /// <summary>Creates the sampler with diffusers' options (<see cref="MultistepSettings"/>), visiting all T timesteps until
    /// <see cref="VpMultistepScheduler.SetTimesteps"/> is called.</summary>
    /// <param name="schedule">The forward-process schedule the model was trained with.</param>
    /// <param name="settings">Spacing or Karras/Lu levels, prediction, clipping or thresholding, final level, lower_order_final.</param>
    public DpmSolverSdeScheduler(DiffusionSchedule schedule, MultistepSettings settings)
        : base(schedule, settings)
    {
    }

    /// <summary>The name in messages and in the sampler registry.</summary>
    public new const string DisplayName = "DPM-Solver++(2M) SDE";

    /// <inheritdoc/>
    public override string Name => DisplayName;

    /// <summary>True: every step but one onto sigma = 0 adds sigma_{i+1} sqrt(1 - e^{-2h}) z.</summary>
    public override bool NeedsNoise => true;

    /// <summary>(sigma_t/sigma_s) e^{-h}, alpha_t (1 - e^{-2h}), sigma_t sqrt(1 - e^{-2h}) (see the class remarks).</summary>
    protected override (double Sample, double Data, double Noise) Coefficients(double h, double sigmaS, double alphaT, double sigmaT)
    {
        double decay = Math.Exp(-h);                            // e^{-h}; 0 when landing on sigma = 0 (h = +inf)
        double variance = 1.0 - Math.Exp(-2.0 * h);             // 1 - e^{-2h}
        return (sigmaT / sigmaS * decay, alphaT * variance, sigmaT * Math.Sqrt(variance));
    }
}
