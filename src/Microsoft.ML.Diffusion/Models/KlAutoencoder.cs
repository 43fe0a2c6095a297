using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Models;

/// <summary>
/// The KL-regularised autoencoder of latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
/// Diffusion Models", section 3.1 and appendix G; diffusers' AutoencoderKL / taming-transformers' Encoder and Decoder),
/// scaled down: the encoder maps an image [B, C, S, S] to the mean and log-variance of a diagonal Gaussian posterior
/// q(z | x) over latents [B, Z, S/f, S/f]; the decoder maps a latent back to an image. No attention in the middle block
/// (diffusers has one; these small grids do not need it).
/// </summary>
internal sealed class KlAutoencoder : nn.Module<Tensor, Tensor>
{
    private readonly AutoencoderEncoder encoder;
    private readonly nn.Module<Tensor, Tensor> quant_conv;
    private readonly nn.Module<Tensor, Tensor> post_quant_conv;
    private readonly AutoencoderDecoder decoder;

    /// <summary>Creates the network (weights from libtorch's global generator).</summary>
    public KlAutoencoder(AutoencoderConfig config) : base("autoencoder")
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        encoder = new AutoencoderEncoder(config);
        quant_conv = Layers.Conv(2 * config.LatentChannels, 2 * config.LatentChannels, 1);       // diffusers' quant_conv
        post_quant_conv = Layers.Conv(config.LatentChannels, config.LatentChannels, 1);          // diffusers' post_quant_conv
        decoder = new AutoencoderDecoder(config);
        RegisterComponents();
    }

    /// <summary>The hyper-parameters.</summary>
    public AutoencoderConfig Config { get; }

    /// <summary>Number of parameters.</summary>
    public long ParameterCount => parameters().Sum(p => p.numel());

    /// <summary>
    /// The posterior q(z | x) = N(mean, diag(exp(logVar))) of images <paramref name="x"/> [B, C, S, S] in [-1, 1]:
    /// mean and log-variance [B, Z, S/f, S/f], the log-variance clamped to [-30, 20] (diffusers' DiagonalGaussianDistribution).
    /// </summary>
    public (Tensor Mean, Tensor LogVar) Encode(Tensor x)
    {
        using var scope = NewDisposeScope();
        var moments = quant_conv.call(encoder.call(x));
        var parts = moments.chunk(2, 1);
        var mean = parts[0];
        var logVar = parts[1].clamp(-30.0, 20.0);
        return (mean.MoveToOuterDisposeScope(), logVar.MoveToOuterDisposeScope());
    }

    /// <summary>Decodes latents [B, Z, S/f, S/f] to images [B, C, S, S] (not clamped).</summary>
    public Tensor Decode(Tensor z)
    {
        using var scope = NewDisposeScope();
        return decoder.call(post_quant_conv.call(z)).MoveToOuterDisposeScope();
    }

    /// <summary>The reconstruction through the posterior mean: Decode(Encode(x).Mean).</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var (mean, _) = Encode(x);
        return Decode(mean).MoveToOuterDisposeScope();
    }
}

/// <summary>A residual block without time embedding (taming-transformers' ResnetBlock): GroupNorm -> SiLU -> conv3x3 -> GroupNorm
/// -> SiLU -> conv3x3, added to the input (1x1 conv when the width changes).</summary>
internal sealed class AutoencoderResBlock : nn.Module<Tensor, Tensor>
{
    private readonly GroupNorm norm1;
    private readonly nn.Module<Tensor, Tensor> conv1;
    private readonly GroupNorm norm2;
    private readonly nn.Module<Tensor, Tensor> conv2;
    private readonly nn.Module<Tensor, Tensor> skip;

    /// <summary>Creates the block.</summary>
    public AutoencoderResBlock(int inChannels, int outChannels, int groups, string name = "res") : base(name)
    {
        norm1 = Layers.GroupNorm(groups, inChannels);
        conv1 = Layers.Conv3x3(inChannels, outChannels);
        norm2 = Layers.GroupNorm(groups, outChannels);
        conv2 = Layers.Conv3x3(outChannels, outChannels);
        skip = inChannels == outChannels ? nn.Identity() : Layers.Conv(inChannels, outChannels, 1);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = conv1.call(nn.functional.silu(norm1.call(x)));
        h = conv2.call(nn.functional.silu(norm2.call(h)));
        return (skip.call(x) + h).MoveToOuterDisposeScope();
    }
}

/// <summary>Nearest-neighbour doubling then a 3x3 convolution (taming-transformers' Upsample with conv).</summary>
internal sealed class AutoencoderUpsample : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> conv;

    /// <summary>Creates the block.</summary>
    public AutoencoderUpsample(int channels, string name = "up") : base(name)
    {
        conv = Layers.Conv3x3(channels, channels);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var up = nn.functional.interpolate(x, scale_factor: new[] { 2.0, 2.0 }, mode: InterpolationMode.Nearest);
        return conv.call(up).MoveToOuterDisposeScope();
    }
}

/// <summary>The encoder: conv_in, per level NumResBlocks residual blocks then a stride-2 convolution (not after the last
/// level), two middle residual blocks, GroupNorm -> SiLU -> conv_out to 2 x LatentChannels (mean and log-variance).</summary>
internal sealed class AutoencoderEncoder : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> conv_in;
    private readonly Sequential down;
    private readonly AutoencoderResBlock mid1;
    private readonly AutoencoderResBlock mid2;
    private readonly GroupNorm norm_out;
    private readonly nn.Module<Tensor, Tensor> conv_out;

    /// <summary>Creates the encoder.</summary>
    public AutoencoderEncoder(AutoencoderConfig c, string name = "encoder") : base(name)
    {
        conv_in = Layers.Conv3x3(c.Channels, c.BaseChannels);
        var blocks = new List<(string, nn.Module<Tensor, Tensor>)>();
        int width = c.BaseChannels;
        for (int level = 0; level < c.ChannelMultipliers.Length; level++)
        {
            int outWidth = c.BaseChannels * c.ChannelMultipliers[level];
            for (int r = 0; r < c.NumResBlocks; r++)
            {
                blocks.Add(($"{blocks.Count}", new AutoencoderResBlock(width, outWidth, c.GroupNormGroups)));
                width = outWidth;
            }
            if (level < c.ChannelMultipliers.Length - 1)
                blocks.Add(($"{blocks.Count}", Layers.Conv3x3(width, width, stride: 2)));   // halves the side
        }
        down = nn.Sequential(blocks);
        mid1 = new AutoencoderResBlock(width, width, c.GroupNormGroups, "mid1");
        mid2 = new AutoencoderResBlock(width, width, c.GroupNormGroups, "mid2");
        norm_out = Layers.GroupNorm(c.GroupNormGroups, width);
        conv_out = Layers.Conv3x3(width, 2 * c.LatentChannels);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = down.call(conv_in.call(x));
        h = mid2.call(mid1.call(h));
        return conv_out.call(nn.functional.silu(norm_out.call(h))).MoveToOuterDisposeScope();
    }
}

/// <summary>The decoder: conv_in from LatentChannels, two middle residual blocks, per level (deepest first) NumResBlocks + 1
/// residual blocks then a doubling (not after the first level), GroupNorm -> SiLU -> conv_out to the image channels.</summary>
internal sealed class AutoencoderDecoder : nn.Module<Tensor, Tensor>
{
    private readonly nn.Module<Tensor, Tensor> conv_in;
    private readonly AutoencoderResBlock mid1;
    private readonly AutoencoderResBlock mid2;
    private readonly Sequential up;
    private readonly GroupNorm norm_out;
    private readonly nn.Module<Tensor, Tensor> conv_out;

    /// <summary>Creates the decoder.</summary>
    public AutoencoderDecoder(AutoencoderConfig c, string name = "decoder") : base(name)
    {
        int levels = c.ChannelMultipliers.Length;
        int width = c.BaseChannels * c.ChannelMultipliers[levels - 1];
        conv_in = Layers.Conv3x3(c.LatentChannels, width);
        mid1 = new AutoencoderResBlock(width, width, c.GroupNormGroups, "mid1");
        mid2 = new AutoencoderResBlock(width, width, c.GroupNormGroups, "mid2");
        var blocks = new List<(string, nn.Module<Tensor, Tensor>)>();
        for (int level = levels - 1; level >= 0; level--)
        {
            int outWidth = c.BaseChannels * c.ChannelMultipliers[level];
            for (int r = 0; r < c.NumResBlocks + 1; r++)
            {
                blocks.Add(($"{blocks.Count}", new AutoencoderResBlock(width, outWidth, c.GroupNormGroups)));
                width = outWidth;
            }
            if (level > 0)
                blocks.Add(($"{blocks.Count}", new AutoencoderUpsample(width)));
        }
        up = nn.Sequential(blocks);
        norm_out = Layers.GroupNorm(c.GroupNormGroups, width);
        conv_out = Layers.Conv3x3(width, c.Channels);
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor z)
    {
        using var scope = NewDisposeScope();
        var h = mid2.call(mid1.call(conv_in.call(z)));
        h = up.call(h);
        return conv_out.call(nn.functional.silu(norm_out.call(h))).MoveToOuterDisposeScope();
    }
}
