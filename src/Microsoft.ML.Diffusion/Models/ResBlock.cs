using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Models;

/// <summary>
/// Residual block (DDPM / guided-diffusion): GroupNorm -> SiLU -> conv3x3, plus a projection of the time
/// embedding, GroupNorm -> SiLU -> dropout -> conv3x3 (zero-initialised), added to the input (1x1 conv when
/// the width changes).
/// </summary>
internal sealed class ResBlock : UNetBlock
{
    private readonly GroupNorm norm1;
    private readonly nn.Module<Tensor, Tensor> conv1;
    private readonly Linear time_proj;
    private readonly GroupNorm norm2;
    private readonly Dropout dropout;
    private readonly nn.Module<Tensor, Tensor> conv2;
    private readonly nn.Module<Tensor, Tensor> skip;
    private readonly double _flops;

    /// <summary>Creates the block for feature maps of side <paramref name="resolution"/> (used for the FLOP count).</summary>
    public ResBlock(int inChannels, int outChannels, int timeDim, int groups, float dropoutRate, int resolution, string name = "res") : base(name)
    {
        norm1 = Layers.GroupNorm(groups, inChannels);
        conv1 = Layers.Conv3x3(inChannels, outChannels);
        time_proj = nn.Linear(timeDim, outChannels);
        norm2 = Layers.GroupNorm(groups, outChannels);
        dropout = nn.Dropout(dropoutRate);
        conv2 = Layers.ZeroConv(outChannels, outChannels, 3);
        skip = inChannels == outChannels ? nn.Identity() : Layers.Conv(inChannels, outChannels, 1);
        double hw = (double)resolution * resolution;
        _flops = 2 * hw * 9 * ((double)inChannels * outChannels + (double)outChannels * outChannels)
                 + 2.0 * timeDim * outChannels
                 + (inChannels == outChannels ? 0 : 2 * hw * inChannels * outChannels);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override double Flops => _flops;

    /// <inheritdoc/>
    public override Tensor forward(Tensor x, Tensor temb)
    {
        using var scope = NewDisposeScope();
        // Without autograd (sampling) the activations are updated in place: fewer fresh buffers per block. With autograd,
        // SiLU's backward needs its input, so the out-of-place forms are kept.
        bool inPlace = !is_grad_enabled();
        var h = conv1.call(Layers.Silu(norm1.call(x), inPlace));
        var t = time_proj.call(nn.functional.silu(temb)).unsqueeze(-1).unsqueeze(-1);
        h = inPlace ? h.add_(t) : h + t;
        h = conv2.call(dropout.call(Layers.Silu(norm2.call(h), inPlace)));
        return (inPlace ? h.add_(skip.call(x)) : skip.call(x) + h).MoveToOuterDisposeScope();
    }
}
