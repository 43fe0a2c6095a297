namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>The variance of each DDPM reverse step p(x_{t-1} | x_t) (Ho et al. 2020, section 3.2).</summary>
internal enum DdpmVariance
{
    /// <summary>
    /// sigma_t^2 = beta_tilde_t = (1 - alpha_bar_prev)/(1 - alpha_bar_t) beta'_t, the posterior variance (DDPM eq. 7);
    /// optimal when x_0 is a single point. The usual choice.
    /// </summary>
    FixedSmall,

    /// <summary>
    /// sigma_t^2 = beta'_t, with beta'_t = 1 - alpha_bar_t/alpha_bar_prev (= beta_t when every step is visited);
    /// optimal when x_0 is standard normal.
    /// </summary>
    FixedLarge,
}
