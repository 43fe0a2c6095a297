using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Conditions;

/// <summary>
/// The conditioning image of a super-resolution model (SR3, Saharia et al. 2021; guided-diffusion's SuperResModel):
/// the low-resolution image is made by average pooling, and the network sees its bicubic upsampling to the full size.
/// Knows TorchSharp only.
/// </summary>
internal static class LowResolutionCondition
{
    /// <summary>Area downsampling: the mean of every <paramref name="factor"/> x <paramref name="factor"/> block of
    /// x [B, C, S, S] -> [B, C, S/f, S/f].</summary>
    public static Tensor Downsample(Tensor x, int factor)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (factor < 1) throw new ArgumentOutOfRangeException(nameof(factor), factor, "The downsampling factor must be >= 1.");
        return nn.functional.avg_pool2d(x, factor, factor);
    }

    /// <summary>Bicubic interpolation (Keys' cubic convolution with a = -0.75, as torch's interpolate mode bicubic,
    /// align_corners false) of <paramref name="lowResolution"/> [B, C, s, s] to [B, C, size, size], clamped to [-1, 1].</summary>
    public static Tensor Upsample(Tensor lowResolution, int size)
    {
        ArgumentNullException.ThrowIfNull(lowResolution);
        using var scope = NewDisposeScope();
        var up = nn.functional.interpolate(lowResolution, size: new long[] { size, size }, mode: InterpolationMode.Bicubic, align_corners: false);
        return up.clamp(-1.0, 1.0).MoveToOuterDisposeScope();
    }

    /// <summary>The conditioning channels for training images x0 [B, C, S, S] in [-1, 1]: Upsample(Downsample(x0, f), S).</summary>
    public static Tensor FromImage(Tensor x0, int factor)
    {
        ArgumentNullException.ThrowIfNull(x0);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return Upsample(Downsample(x0, factor), (int)x0.shape[^1]).MoveToOuterDisposeScope();
    }
}
