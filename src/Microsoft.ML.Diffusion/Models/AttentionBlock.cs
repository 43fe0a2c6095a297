using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Models;

/// <summary>
/// Multi-head self-attention over the H x W positions (DDPM section 4 / guided-diffusion): GroupNorm, a 1x1 conv
/// to q, k, v, softmax(q k^T / sqrt(d)) v, a zero-initialised 1x1 output conv, residual.
/// </summary>
internal sealed class AttentionBlock : UNetBlock
{
    private readonly GroupNorm norm;
    private readonly nn.Module<Tensor, Tensor> qkv;
    private readonly nn.Module<Tensor, Tensor> proj;
    private readonly int _heads;
    private readonly double _flops;

    /// <summary>Creates the block for <paramref name="channels"/> channels at side <paramref name="resolution"/>.</summary>
    public AttentionBlock(int channels, int heads, int groups, int resolution, string name = "attention") : base(name)
    {
        if (channels % heads != 0) throw new ArgumentException($"Attention width {channels} is not divisible by {heads} heads.", nameof(heads));
        _heads = heads;
        norm = Layers.GroupNorm(groups, channels);
        qkv = Layers.Conv(channels, 3 * channels, 1);
        proj = Layers.ZeroConv(channels, channels, 1);
        double n = (double)resolution * resolution;
        _flops = 2 * n * channels * 3 * channels + 2 * n * channels * channels + 2 * 2 * n * n * channels;
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override double Flops => _flops;

    /// <inheritdoc/>
    public override Tensor forward(Tensor x, Tensor temb)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        long d = c / _heads;
        // [B, 3C, H, W] -> [3, B, heads, HW, d]
        var parts = qkv.call(norm.call(x)).reshape(b, 3, _heads, d, h * w).permute(1, 0, 2, 4, 3);
        var q = parts[0];
        var k = parts[1];
        var v = parts[2];
        // softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017, eq. 1), written out: libtorch 2.10's fused CPU
        // scaled_dot_product_attention returned NaN gradients on the first backward of a process.
        var weights = matmul(q, k.transpose(-1, -2)).mul_(1.0 / Math.Sqrt(d)).softmax(-1);
        var attended = matmul(weights, v);
        var merged = attended.permute(0, 1, 3, 2).reshape(b, c, h, w);
        return (x + proj.call(merged)).MoveToOuterDisposeScope();
    }
}
