using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Training;

/// <summary>
/// The autoencoder objective of latent diffusion without its perceptual and adversarial terms (Rombach et al. 2022,
/// appendix G; taming-transformers' LPIPSWithDiscriminator with perceptual_weight = 0 and no discriminator):
/// L = |x - D(z)|_1 + beta KL(q(z|x) || N(0, I)), both summed over an image's elements and averaged over the batch,
/// with z = mean + sigma * eps drawn by the reparameterisation trick (Kingma &amp; Welling 2014, section 2.4).
/// The LPIPS perceptual term needs a pretrained VGG network, which is not available offline.
/// </summary>
internal static class AutoencoderLoss
{
    /// <summary>z = mean + exp(logVar / 2) * eps (the reparameterisation trick).</summary>
    public static Tensor Sample(Tensor mean, Tensor logVar, Tensor eps) => mean + (0.5 * logVar).exp() * eps;

    /// <summary>
    /// KL(N(mean, diag(exp(logVar))) || N(0, I)) per image: 0.5 * sum(mean^2 + exp(logVar) - 1 - logVar) over all latent
    /// elements (Kingma &amp; Welling 2014, appendix B). Returns [B].
    /// </summary>
    public static Tensor KlDivergence(Tensor mean, Tensor logVar)
    {
        using var scope = NewDisposeScope();
        var kl = 0.5 * (mean.square() + logVar.exp() - 1.0 - logVar);
        return kl.flatten(1).sum(1).MoveToOuterDisposeScope();
    }

    /// <summary>The L1 reconstruction error per image, summed over its elements. Returns [B].</summary>
    public static Tensor L1PerImage(Tensor x, Tensor reconstruction)
    {
        using var scope = NewDisposeScope();
        return (x - reconstruction).abs().flatten(1).sum(1).MoveToOuterDisposeScope();
    }

    /// <summary>mean over the batch of L1 + <paramref name="klWeight"/> * KL; a scalar.</summary>
    public static Tensor Total(Tensor x, Tensor reconstruction, Tensor mean, Tensor logVar, double klWeight)
    {
        using var scope = NewDisposeScope();
        var loss = L1PerImage(x, reconstruction).mean() + klWeight * KlDivergence(mean, logVar).mean();
        return loss.MoveToOuterDisposeScope();
    }
}
