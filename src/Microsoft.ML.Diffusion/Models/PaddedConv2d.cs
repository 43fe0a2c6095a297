using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Models;

/// <summary>
/// A 2-D convolution whose input or output channel count may be smaller than 32:
/// the computation zero-pads the channels up to 32 and slices the result, while the parameters keep their
/// natural shapes [out, in, k, k]. The result equals the plain convolution.
/// </summary>
/// <remarks>
/// libtorch 2.10 (oneDNN 3.7) with its AVX-512 kernels computes wrong or NaN results, at random and with more than
/// one thread, for convolutions with few input or output channels: seen on AMD EPYC (Zen 5) for 1, 8 and 16
/// channels, never for 32 or more (compare oneDNN issue #6035 on IC &lt; ic_block kernels writing past their
/// workspace). Padding keeps every convolution on the wide kernels, for about 2% more work in the U-Net's 1-channel
/// input and output layers; small test networks pay more.
/// </remarks>
public sealed class PaddedConv2d : nn.Module<Tensor, Tensor>
{
    /// <summary>The smallest channel count handed to the backend.</summary>
    public const int MinimumChannels = 32;

    private readonly Parameter weight;
    private readonly Parameter bias;
    private readonly int _inChannels;
    private readonly int _outChannels;
    private readonly int _padding;
    private readonly int _stride;

    /// <summary>Creates the convolution (padding kernelSize / 2), initialised as nn.Conv2d is.</summary>
    public PaddedConv2d(int inChannels, int outChannels, int kernelSize, int stride = 1, string name = "conv") : base(name)
    {
        _inChannels = inChannels;
        _outChannels = outChannels;
        _padding = kernelSize / 2;
        _stride = stride;
        using (var reference = nn.Conv2d(inChannels, outChannels, kernel_size: kernelSize, stride: stride, padding: _padding))
        {
            weight = new Parameter(reference.weight!.detach().clone());
            bias = new Parameter(reference.bias!.detach().clone());
        }
        RegisterComponents();
    }

    /// <summary>The weight [out, in, k, k].</summary>
    public Parameter Weight => weight;

    /// <summary>The bias [out].</summary>
    public Parameter Bias => bias;

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        Tensor w = weight, b = bias, input = x;
        int padIn = Math.Max(0, MinimumChannels - _inChannels);
        int padOut = Math.Max(0, MinimumChannels - _outChannels);
        if (padIn > 0)
        {
            input = nn.functional.pad(x, new long[] { 0, 0, 0, 0, 0, padIn });          // [B, in + padIn, H, W]
            w = nn.functional.pad(w, new long[] { 0, 0, 0, 0, 0, padIn });             // [out, in + padIn, k, k]
        }
        if (padOut > 0)
        {
            w = nn.functional.pad(w, new long[] { 0, 0, 0, 0, 0, 0, 0, padOut });       // [out + padOut, ., k, k]
            b = nn.functional.pad(b, new long[] { 0, padOut });
        }
        var y = nn.functional.conv2d(input, w, b, strides: new long[] { _stride, _stride }, padding: new long[] { _padding, _padding });
        if (padOut > 0) y = y[.., .._outChannels];
        return y.MoveToOuterDisposeScope();
    }
}
