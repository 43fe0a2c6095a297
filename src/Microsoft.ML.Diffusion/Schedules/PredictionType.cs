namespace Microsoft.ML.Diffusion;

/// <summary>
/// What the network predicts from (x_t, t). With alpha_t = sqrt(alpha_bar_t) and sigma_t = sqrt(1 - alpha_bar_t),
/// x_t = alpha_t x_0 + sigma_t eps (DDPM eq. 4), and each target determines the other two given x_t.
/// </summary>
public enum PredictionType
{
    /// <summary>The noise eps (Ho et al. 2020, eq. 14); the DDPM default.</summary>
    Epsilon,

    /// <summary>The clean sample x_0 directly.</summary>
    Sample,

    /// <summary>
    /// The velocity v = alpha_t eps - sigma_t x_0 (Salimans &amp; Ho 2022, "Progressive Distillation", section 4);
    /// then x_0 = alpha_t x_t - sigma_t v and eps = sigma_t x_t + alpha_t v.
    /// </summary>
    VPrediction,
}
