namespace Microsoft.ML.Diffusion;

/// <summary>How the per-sample training loss is weighted over timesteps.</summary>
public enum LossWeighting
{
    /// <summary>Unweighted mean squared error against the prediction target (DDPM's L_simple for epsilon).</summary>
    None,

    /// <summary>
    /// Min-SNR-gamma weighting with gamma = 5 (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting
    /// Strategy", eq. 8 and its epsilon / v forms): with SNR_t = alpha_bar_t / (1 - alpha_bar_t), the weight is
    /// min(SNR, gamma) / SNR for epsilon, min(SNR, gamma) for x_0 and min(SNR, gamma) / (SNR + 1) for v.
    /// </summary>
    MinSnr,
}
