using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Models;

/// <summary>
/// Sinusoidal timestep embedding (Vaswani et al. 2017, section 3.5; DDPM appendix B) followed by an MLP:
/// Linear(dim, 4 dim) -> SiLU -> Linear(4 dim, 4 dim).
/// </summary>
internal sealed class TimestepEmbedding : nn.Module<Tensor, Tensor>
{
    private readonly int _dim;
    private readonly Linear linear1;
    private readonly Linear linear2;

    /// <summary>Creates the embedding; <paramref name="dim"/> must be even.</summary>
    public TimestepEmbedding(int dim, string name = "time_embedding") : base(name)
    {
        if (dim < 2 || dim % 2 != 0) throw new ArgumentOutOfRangeException(nameof(dim), dim, "The time embedding width must be even and >= 2.");
        _dim = dim;
        linear1 = nn.Linear(dim, 4 * dim);
        linear2 = nn.Linear(4 * dim, 4 * dim);
        RegisterComponents();
    }

    /// <summary>The output width (4 x dim).</summary>
    public int OutputDim => 4 * _dim;

    /// <summary>Forward FLOPs per image.</summary>
    public double Flops => 2.0 * _dim * 4 * _dim + 2.0 * 4 * _dim * 4 * _dim;

    /// <summary>emb(t)_i = sin(t * 10000^(-i / (d/2))) for i &lt; d/2, cos for the other half.</summary>
    public static Tensor Sinusoidal(Tensor t, int dim)
    {
        using var scope = NewDisposeScope();
        int half = dim / 2;
        var exponent = arange(half, dtype: float32, device: t.device) * (-Math.Log(10000.0) / half);
        var args = t.to(float32).unsqueeze(1) * exponent.exp().unsqueeze(0);
        return cat(new[] { args.sin(), args.cos() }, 1).MoveToOuterDisposeScope();
    }

    /// <summary>t: [B] timesteps -> [B, 4 dim].</summary>
    public override Tensor forward(Tensor t)
    {
        using var scope = NewDisposeScope();
        // The embedding is computed in float32 and cast to the weights' type (a no-op for a float32 network).
        var h = linear1.call(Sinusoidal(t, _dim).to(linear1.weight!.dtype));
        return linear2.call(nn.functional.silu(h)).MoveToOuterDisposeScope();
    }
}
