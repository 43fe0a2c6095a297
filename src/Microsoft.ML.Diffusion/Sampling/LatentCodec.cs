using Microsoft.ML.Diffusion.Onnx;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Sampling;

/// <summary>What latent diffusion needs of its autoencoder: E(x), the posterior mean of the encoder, and D(z) on a chosen engine.
/// <see cref="AutoencoderModel"/> implements it; the pipeline sees only this.</summary>
internal interface ILatentCodec
{
    /// <summary>E(x): the posterior means of images <paramref name="images"/> [B, C, S, S] in [-1, 1] (CPU).</summary>
    Tensor Encode(Tensor images);

    /// <summary>D(z): the images of latents <paramref name="latents"/> (CPU), the decoder run by <paramref name="engine"/>.</summary>
    Tensor Decode(Tensor latents, InferenceEngine engine);
}

/// <summary>
/// The latent scaling of latent diffusion (Rombach et al. 2022, section 4.3.2 and appendix G, "scale_by_std"): the diffusion model
/// works on z = s * E(x), s = 1 / std(E(x)) over the first training batch, so its data have unit variance like the pixel data the
/// noise schedules were designed for.
/// </summary>
internal static class LatentCodec
{
    /// <summary>z = scale * E(x): the diffusion model's data for images <paramref name="pixels"/> [B, C, S, S] (CPU).</summary>
    public static Tensor ToLatent(ILatentCodec codec, Tensor pixels, double scale)
    {
        using var mean = codec.Encode(pixels);
        return (mean * scale).to_type(float32);
    }

    /// <summary>x = D(z / scale), clamped to [-1, 1]: the images of latents <paramref name="latents"/> (CPU), the decoder run by
    /// <paramref name="engine"/>.</summary>
    public static Tensor ToImage(ILatentCodec codec, Tensor latents, double scale, InferenceEngine engine = InferenceEngine.TorchSharp)
    {
        using var scaled = latents / scale;
        using var decoded = codec.Decode(scaled, engine);
        return decoded.clamp(-1.0, 1.0);
    }
}
