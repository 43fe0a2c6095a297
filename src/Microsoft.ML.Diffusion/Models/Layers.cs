using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Models;

/// <summary>Layer constructors with the initialisation the U-Net needs.</summary>
internal static class Layers
{
    /// <summary>
    /// GroupNorm with weight = 1 and bias = 0 set explicitly: TorchSharp 0.107's nn.GroupNorm leaves them
    /// uninitialised (torch.empty), which makes training produce NaN.
    /// </summary>
    public static GroupNorm GroupNorm(int groups, int channels)
    {
        var norm = nn.GroupNorm(groups, channels, eps: 1e-5);
        using (no_grad())
        {
            norm.weight!.fill_(1.0);
            norm.bias!.fill_(0.0);
        }
        return norm;
    }

    /// <summary>SiLU(x) = x sigmoid(x) (Elfwing et al. 2018); in place on <paramref name="x"/> when <paramref name="inPlace"/>
    /// (only for a fresh tensor that autograd does not need, e.g. a GroupNorm output while sampling).</summary>
    public static Tensor Silu(Tensor x, bool inPlace) => inPlace ? x.silu_() : nn.functional.silu(x);

    /// <summary>A 3x3 convolution with padding 1.</summary>
    public static nn.Module<Tensor, Tensor> Conv3x3(int inChannels, int outChannels, int stride = 1) => Conv(inChannels, outChannels, 3, stride);

    /// <summary>A convolution with padding kernelSize / 2, channel-padded when a side has fewer than 32 channels (see <see cref="PaddedConv2d"/>).</summary>
    public static nn.Module<Tensor, Tensor> Conv(int inChannels, int outChannels, int kernelSize, int stride = 1) =>
        inChannels < PaddedConv2d.MinimumChannels || outChannels < PaddedConv2d.MinimumChannels
            ? new PaddedConv2d(inChannels, outChannels, kernelSize, stride)
            : nn.Conv2d(inChannels, outChannels, kernel_size: kernelSize, stride: stride, padding: kernelSize / 2);

    /// <summary>A convolution whose weights and bias start at zero, so the block it ends starts as the identity (DDPM / guided-diffusion).</summary>
    public static nn.Module<Tensor, Tensor> ZeroConv(int inChannels, int outChannels, int kernelSize)
    {
        var conv = Conv(inChannels, outChannels, kernelSize);
        using (no_grad())
        {
            foreach (var p in conv.parameters())
                p.zero_();
        }
        return conv;
    }
}

/// <summary>A U-Net stage: maps (x, time embedding) to a feature map.</summary>
internal abstract class UNetBlock : nn.Module<Tensor, Tensor, Tensor>
{
    /// <summary>Creates the block.</summary>
    protected UNetBlock(string name) : base(name) { }

    /// <summary>Forward FLOPs per image (a multiply-add counts 2).</summary>
    public abstract double Flops { get; }
}
