using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Models;

/// <summary>
/// A 2-D convolution whose input or output channel count may be smaller than 32. In float32 with stride 1, a layer with at
/// most <see cref="MatrixProductChannels"/> input or output channels (an image's channels at the U-Net's ends) runs as a
/// matrix product; otherwise the computation zero-pads the channels up to 32 and slices the result. The parameters keep
/// their natural shapes [out, in, k, k], and the result equals the plain convolution up to float rounding.
/// </summary>
/// <remarks>
/// libtorch 2.10 (oneDNN 3.7) computes wrong or NaN results for convolutions with few input or output channels: with its
/// AVX-512 kernels at random and with more than one thread, seen on AMD EPYC (Zen 5) for 1, 8 and 16 channels (compare
/// oneDNN issue #6035 on IC &lt; ic_block kernels writing past their workspace); and, even with AVX2 kernels, wrong input
/// gradients for output widths such as 20; never for 32 or more. Padding keeps every convolution on the wide kernels. For
/// 1 to <see cref="MatrixProductChannels"/> channels padding would multiply the work by 8 to 32, so those layers use a
/// matrix product (BLAS) instead, which is also faster than the plain convolution.
/// </remarks>
internal sealed class PaddedConv2d : nn.Module<Tensor, Tensor>
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

    /// <summary>At most this many input or output channels (float32, stride 1), the convolution runs as a matrix product.</summary>
    public const int MatrixProductChannels = 4;

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        // A layer with very few channels (an image's 1 or 3 at the U-Net's ends) runs as a matrix product (MKL), not as a
        // 32-channel padded convolution: 8-32x less work at the same result up to float rounding.
        if (x.dtype == ScalarType.Float32 && _stride == 1)
        {
            if (_inChannels <= MatrixProductChannels) return ForwardByUnfold(x);
            if (_outChannels <= MatrixProductChannels) return ForwardByShiftedProducts(x);
        }
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

    /// <summary>im2col: the k x k patches of x [B, in k k, H W] times the weight [out, in k k].</summary>
    private Tensor ForwardByUnfold(Tensor x)
    {
        using var scope = NewDisposeScope();
        int k = (int)weight.shape[2];
        var patches = nn.functional.unfold(x, k, padding: _padding);                          // [B, in k k, H W]
        long n = x.shape[0];
        // bmm, not matmul: matmul's choice between folding and batching depends on whether the weight requires a
        // gradient, and the two sum in different orders; a model and its saved-and-loaded copy must agree bit for bit.
        var y = bmm(weight.reshape(1, _outChannels, -1).expand(n, -1, -1), patches).add_(bias.view(1, -1, 1)); // [B, out, H W]
        return y.view(n, _outChannels, x.shape[2], x.shape[3]).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// out[i, j] = sum over taps (u, v) of W[u, v] x[i + u - p, j + v - p]: one product of all k k taps' weights
    /// [k k out, in] with x [B, in, H W], then the k k partial maps shifted into place and summed.
    /// </summary>
    private Tensor ForwardByShiftedProducts(Tensor x)
    {
        using var scope = NewDisposeScope();
        int k = (int)weight.shape[2];
        long n = x.shape[0], h = x.shape[2], w = x.shape[3];
        var taps = weight.permute(2, 3, 0, 1).reshape(k * k * _outChannels, _inChannels);              // [(u, v, out), in]
        var partial = bmm(taps.unsqueeze(0).expand(n, -1, -1), x.reshape(n, _inChannels, h * w))          // bmm: see ForwardByUnfold
            .view(n, k, k, _outChannels, h, w);
        var padded = nn.functional.pad(partial, new long[] { _padding, _padding, _padding, _padding }); // zero outside the image
        Tensor? y = null;
        for (int u = 0; u < k; u++)
            for (int v = 0; v < k; v++)
            {
                var shifted = padded[.., u, v, .., u..(u + (int)h), v..(v + (int)w)];
                y = y is null ? shifted + bias.view(1, -1, 1, 1) : y.add_(shifted);
            }
        return y!.MoveToOuterDisposeScope();
    }
}
