namespace Microsoft.ML.Diffusion;

/// <summary>
/// The variance Sigma_t of the reverse steps p(x_{t-1} | x_t) = N(mu_theta, Sigma_t): fixed (Ho et al. 2020, section 3.2)
/// or learned by the network (Nichol &amp; Dhariwal 2021, "Improved DDPM", section 3.1).
/// </summary>
public enum VarianceType
{
    /// <summary>sigma_t^2 = beta_tilde_t, the posterior variance of q(x_{t-1} | x_t, x_0) (DDPM eq. 7). The default.</summary>
    FixedSmall,

    /// <summary>sigma_t^2 = beta_t (beta'_t = 1 - alpha_bar_t/alpha_bar_prev for strided steps).</summary>
    FixedLarge,

    /// <summary>
    /// Learned: the network outputs 2 C channels, the prediction and a raw r in [-1, 1] per pixel; with v = (r + 1)/2,
    /// log Sigma_t = v log beta_t + (1 - v) log beta_tilde_t (Improved DDPM eq. 15). Trained with the hybrid loss
    /// L_simple + 0.001 L_vlb (eq. 16). DDIM and DPM-Solver++ ignore the variance channels.
    /// </summary>
    Learned,
}
