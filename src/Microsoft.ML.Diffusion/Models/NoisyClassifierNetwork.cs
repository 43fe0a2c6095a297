using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Models;

/// <summary>
/// The time-conditioned classifier p_phi(y | x_t, t) of classifier guidance (Dhariwal &amp; Nichol 2021, section 4 and
/// appendix: "the downsampling trunk of the UNet model with an attention pool at the 8x8 layer"): the <see cref="UNet"/>'s
/// encoder half (time embedding, input convolution, the down stages with their attention, the middle block) followed by
/// guided-diffusion's "adaptive" pooling head: GroupNorm -> SiLU -> global average pool -> zero-initialised linear layer to
/// <see cref="NoisyClassifierConfig.NumClasses"/> logits (so training starts from the uniform distribution).
/// </summary>
internal sealed class NoisyClassifierNetwork : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly TimestepEmbedding time_embedding;
    private readonly nn.Module<Tensor, Tensor> input_conv;
    private readonly ModuleList<UNetBlock> down;
    private readonly ModuleList<UNetBlock> middle;
    private readonly GroupNorm output_norm;
    private readonly Linear head;

    /// <summary>Builds the network (on the CPU; move it with <c>.to(device)</c>).</summary>
    public NoisyClassifierNetwork(NoisyClassifierConfig config, string name = "noisy_classifier") : base(name)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int b = config.BaseChannels, g = config.GroupNormGroups, heads = config.AttentionHeads;
        float p = config.Dropout;
        var attentionAt = new HashSet<int>(config.AttentionResolutions);

        time_embedding = new TimestepEmbedding(b);
        int tdim = time_embedding.OutputDim;
        input_conv = Layers.Conv3x3(config.InChannels, b);
        int res = config.ImageSize, ch = b, levels = config.ChannelMultipliers.Length;
        var downBlocks = new List<UNetBlock>();
        for (int level = 0; level < levels; level++)
        {
            int outCh = b * config.ChannelMultipliers[level];
            for (int i = 0; i < config.NumResBlocks; i++)
            {
                downBlocks.Add(new ResAttentionBlock(new ResBlock(ch, outCh, tdim, g, p, res),
                    attentionAt.Contains(res) ? new AttentionBlock(outCh, heads, g, res) : null));
                ch = outCh;
            }
            if (level < levels - 1)
            {
                downBlocks.Add(new Downsample(ch, res));
                res /= 2;
            }
        }
        down = nn.ModuleList(downBlocks.ToArray());
        middle = nn.ModuleList<UNetBlock>(
            new ResBlock(ch, ch, tdim, g, p, res), new AttentionBlock(ch, heads, g, res), new ResBlock(ch, ch, tdim, g, p, res));
        output_norm = Layers.GroupNorm(g, ch);
        head = nn.Linear(ch, config.NumClasses);
        using (no_grad())
        {
            // guided-diffusion: zero_module(conv_nd(dims, ch, out_channels, 1)) after the pool.
            head.weight!.zero_();
            head.bias!.zero_();
        }
        RegisterComponents();
        ParameterCount = parameters().Sum(t => t.numel());
    }

    /// <summary>The hyper-parameters.</summary>
    public NoisyClassifierConfig Config { get; }

    /// <summary>Number of trainable parameters.</summary>
    public long ParameterCount { get; }

    /// <summary>x: [B, InChannels, S, S] noisy images x_t in [-1, 1]-scale; t: [B] timesteps. Returns the logits [B, NumClasses].</summary>
    public override Tensor forward(Tensor x, Tensor t)
    {
        using var scope = NewDisposeScope();
        var temb = time_embedding.call(t);
        var h = input_conv.call(x);
        foreach (var block in down) h = block.call(h, temb);
        foreach (var block in middle) h = block.call(h, temb);
        // Pooling head: GroupNorm -> SiLU -> global average pool -> linear.
        h = nn.functional.silu(output_norm.call(h)).mean(new long[] { 2, 3 });
        return head.call(h).MoveToOuterDisposeScope();
    }
}
