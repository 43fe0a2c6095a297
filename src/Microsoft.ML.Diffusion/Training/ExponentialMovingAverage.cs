using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Training;

/// <summary>
/// Exponential moving average of a module's parameters (DDPM section 4 samples from EMA weights), with the
/// usual warm-up: the decay used at update n is min(decay, (1 + n) / (10 + n)), so early averages are not
/// dominated by the random initial weights.
/// </summary>
internal sealed class ExponentialMovingAverage
{
    private readonly nn.Module _source;
    private readonly nn.Module _shadow;

    /// <param name="source">The trained module.</param>
    /// <param name="shadow">A module of the same architecture that receives the average; it is overwritten with the source's weights.</param>
    /// <param name="decay">The target decay, in [0, 1).</param>
    public ExponentialMovingAverage(nn.Module source, nn.Module shadow, double decay)
    {
        if (!(decay >= 0 && decay < 1))
            throw new ArgumentOutOfRangeException(nameof(decay), decay, "EMA decay must be in [0, 1).");
        _source = source;
        _shadow = shadow;
        Decay = decay;
        CopyFrom(source);
        foreach (var p in _shadow.parameters()) p.requires_grad = false;
    }

    /// <summary>The target decay.</summary>
    public double Decay { get; }

    /// <summary>Updates done so far.</summary>
    public long Updates { get; set; }

    /// <summary>The module holding the averaged weights.</summary>
    public nn.Module Shadow => _shadow;

    /// <summary>The decay used at update number <paramref name="updates"/> (0-based).</summary>
    public double DecayAt(long updates) => Math.Min(Decay, (1.0 + updates) / (10.0 + updates));

    /// <summary>shadow = d * shadow + (1 - d) * source, for every parameter.</summary>
    public void Update()
    {
        double d = DecayAt(Updates);
        // Scalars held by using, not implicit temporaries: a temporary's finalizer may free it during the native call
        // (see ScalarSafeOptimizers).
        using Scalar decay = d.ToScalar(), rest = (1 - d).ToScalar();
        using (no_grad())
        using (NewDisposeScope())
        {
            var src = _source.parameters().ToArray();
            var dst = _shadow.parameters().ToArray();
            for (int i = 0; i < src.Length; i++)
                dst[i].mul_(decay).add_(src[i].detach(), alpha: rest);
        }
        Updates++;
    }

    private void CopyFrom(nn.Module source)
    {
        using (no_grad())
        {
            var src = source.parameters().ToArray();
            var dst = _shadow.parameters().ToArray();
            if (src.Length != dst.Length)
                throw new ArgumentException("The shadow module does not have the source's architecture.", nameof(source));
            for (int i = 0; i < src.Length; i++)
                dst[i].copy_(src[i]);
        }
    }
}
