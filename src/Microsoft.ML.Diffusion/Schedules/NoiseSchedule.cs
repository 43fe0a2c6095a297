namespace Microsoft.ML.Diffusion;

/// <summary>
/// The kinds of beta (noise variance) schedule a diffusion model can be trained with.
/// See <see cref="Schedules.BetaSchedules"/> for the formulas.
/// </summary>
public enum NoiseSchedule
{
    /// <summary>Betas evenly spaced from 1e-4 to 0.02 (Ho et al. 2020, DDPM, section 4).</summary>
    Linear,

    /// <summary>alpha_bar(t) = f(t)/f(0) with f(t) = cos^2(((t/T) + s)/(1 + s) * pi/2) (Nichol and Dhariwal 2021, Improved DDPM, eq. 17).</summary>
    Cosine,

    /// <summary>Square roots of the betas evenly spaced from sqrt(0.00085) to sqrt(0.012), then squared (Stable Diffusion, Rombach et al. 2022).</summary>
    ScaledLinear,

    /// <summary>alpha_bar follows a rescaled sigmoid from -3 to 3 (Jabri et al. 2022, RIN; lucidrains' sigmoid_beta_schedule).</summary>
    Sigmoid,
}
