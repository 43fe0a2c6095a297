using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Models;

/// <summary>
/// The noise-prediction network eps_theta(x_t, t) of DDPM (Ho et al. 2020, appendix B): a U-Net of residual
/// blocks with GroupNorm and SiLU, self-attention at the configured resolutions, a sinusoidal time embedding
/// added in every residual block, and skip connections from each down stage to the matching up stage. A class-conditional
/// network (<see cref="UNetConfig.NumClasses"/> &gt; 0) adds a learned class embedding to the time embedding, as
/// guided-diffusion's label_emb does; its last row is the null label of classifier-free guidance (Ho &amp; Salimans 2022).
/// </summary>
internal sealed class UNet : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly TimestepEmbedding time_embedding;
    private readonly Embedding? class_embedding;                  // null when unconditional
    private readonly nn.Module<Tensor, Tensor> input_conv;
    private readonly ModuleList<UNetBlock> down;
    private readonly ModuleList<UNetBlock> middle;
    private readonly ModuleList<UNetBlock> up;
    private readonly GroupNorm output_norm;
    private readonly nn.Module<Tensor, Tensor> output_conv;
    private readonly double _flops;

    /// <summary>Builds the network (on the CPU; move it with <c>.to(device)</c>).</summary>
    public UNet(UNetConfig config, string name = "unet") : base(name)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int b = config.BaseChannels, g = config.GroupNormGroups, heads = config.AttentionHeads;
        float p = config.Dropout;
        var attentionAt = new HashSet<int>(config.AttentionResolutions);

        time_embedding = new TimestepEmbedding(b);
        int tdim = time_embedding.OutputDim;
        double flops = time_embedding.Flops;
        input_conv = Layers.Conv3x3(config.InChannels, b);
        int res = config.ImageSize;
        flops += 2.0 * res * res * 9 * config.InChannels * b;

        // Down path: every stage's output is kept as a skip.
        var downBlocks = new List<UNetBlock>();
        var skipChannels = new Stack<int>();
        skipChannels.Push(b);
        int ch = b;
        int levels = config.ChannelMultipliers.Length;
        for (int level = 0; level < levels; level++)
        {
            int outCh = b * config.ChannelMultipliers[level];
            for (int i = 0; i < config.NumResBlocks; i++)
            {
                downBlocks.Add(Stage(ch, outCh, res));
                ch = outCh;
                skipChannels.Push(ch);
            }
            if (level < levels - 1)
            {
                downBlocks.Add(new Downsample(ch, res));
                res /= 2;
                skipChannels.Push(ch);
            }
        }
        down = nn.ModuleList(downBlocks.ToArray());

        // Middle: ResBlock, self-attention, ResBlock at the lowest resolution.
        var middleBlocks = new UNetBlock[]
        {
            new ResBlock(ch, ch, tdim, g, p, res), new AttentionBlock(ch, heads, g, res), new ResBlock(ch, ch, tdim, g, p, res),
        };
        middle = nn.ModuleList(middleBlocks);

        // Up path: NumResBlocks + 1 stages per level, each consuming one skip.
        var upBlocks = new List<UNetBlock>();
        for (int level = levels - 1; level >= 0; level--)
        {
            int outCh = b * config.ChannelMultipliers[level];
            for (int i = 0; i < config.NumResBlocks + 1; i++)
            {
                upBlocks.Add(new SkipStage(Stage(ch + skipChannels.Pop(), outCh, res)));
                ch = outCh;
            }
            if (level > 0)
            {
                upBlocks.Add(new Upsample(ch, res));
                res *= 2;
            }
        }
        up = nn.ModuleList(upBlocks.ToArray());
        output_norm = Layers.GroupNorm(g, ch);
        output_conv = Layers.ZeroConv(ch, config.OutChannels, 3);
        flops += 2.0 * res * res * 9 * ch * config.OutChannels;
        flops += downBlocks.Sum(x => x.Flops) + middleBlocks.Sum(x => x.Flops) + upBlocks.Sum(x => x.Flops);
        // Created last, so the other weights are initialised exactly as in an unconditional network with the same seed.
        if (config.NumClasses > 0)
        {
            class_embedding = nn.Embedding(config.NumClasses + 1, tdim);
            flops += tdim;
        }
        _flops = flops;
        RegisterComponents();
        ParameterCount = parameters().Sum(t => t.numel());

        ResAttentionBlock Stage(int inCh, int outCh, int r) =>
            new(new ResBlock(inCh, outCh, tdim, g, p, r), attentionAt.Contains(r) ? new AttentionBlock(outCh, heads, g, r) : null);
    }

    /// <summary>The hyper-parameters.</summary>
    public UNetConfig Config { get; }

    /// <summary>Number of trainable parameters.</summary>
    public long ParameterCount { get; }

    /// <summary>Forward FLOPs per image (a multiply-add counts 2): convolutions, linear layers and attention products.</summary>
    public double ForwardFlopsPerImage() => _flops;

    /// <summary>The class index that means "no class" (classifier-free guidance's null label): <see cref="UNetConfig.NumClasses"/>.</summary>
    public int NullLabel => Config.NumClasses;

    /// <summary>x: [B, InChannels, S, S]; t: [B] timesteps. Returns the predicted noise [B, OutChannels, S, S].
    /// A class-conditional network uses the null label.</summary>
    public override Tensor forward(Tensor x, Tensor t) => forward(x, t, null);

    /// <summary>
    /// x: [B, InChannels, S, S]; t: [B] timesteps; <paramref name="classLabels"/>: [B] int64 class indices in
    /// 0..NumClasses, NumClasses being the null label (null: the null label for all). Returns [B, OutChannels, S, S].
    /// </summary>
    /// <exception cref="ArgumentException">Labels are given to an unconditional network.</exception>
    public Tensor forward(Tensor x, Tensor t, Tensor? classLabels)
    {
        if (classLabels is not null && class_embedding is null)
            throw new ArgumentException("This U-Net is unconditional (UNetConfig.NumClasses = 0); it takes no class labels.", nameof(classLabels));
        using var scope = NewDisposeScope();
        var temb = time_embedding.call(t);
        if (class_embedding is not null)
        {
            // guided-diffusion: emb = emb + label_emb(y); the null label (index NumClasses) is the unconditional branch.
            var y = classLabels ?? full(new long[] { x.shape[0] }, (long)Config.NumClasses, dtype: int64, device: x.device);
            temb = temb + class_embedding.call(y);
        }
        var h = input_conv.call(x);
        var skips = new Stack<Tensor>();
        skips.Push(h);
        foreach (var block in down)
        {
            h = block.call(h, temb);
            skips.Push(h);
        }
        foreach (var block in middle)
            h = block.call(h, temb);
        foreach (var block in up)
        {
            if (block is SkipStage)
                h = cat(new[] { h, skips.Pop() }, 1);
            h = block.call(h, temb);
        }
        h = output_conv.call(Layers.Silu(output_norm.call(h), inPlace: !is_grad_enabled()));
        return h.MoveToOuterDisposeScope();
    }

    /// <summary>An up stage whose input is the concatenation of the feature map and a skip.</summary>
    private sealed class SkipStage : UNetBlock
    {
        private readonly ResAttentionBlock stage;

        public SkipStage(ResAttentionBlock stage) : base("skip_stage")
        {
            this.stage = stage;
            RegisterComponents();
        }

        public override double Flops => stage.Flops;

        public override Tensor forward(Tensor x, Tensor temb) => stage.call(x, temb);
    }
}
