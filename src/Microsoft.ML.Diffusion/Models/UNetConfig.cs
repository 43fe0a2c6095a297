using System.Text.Json.Serialization;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Hyper-parameters of the denoising U-Net; a plain serialisable record (saved as JSON in model zips).
/// Equality compares the arrays by content.
/// </summary>
public sealed record UNetConfig
{
    /// <summary>Image side in pixels.</summary>
    public int ImageSize { get; init; } = 28;
    /// <summary>Input channels (1 grayscale, 3 RGB, more with conditioning inputs).</summary>
    public int InChannels { get; init; } = 1;
    /// <summary>Output channels.</summary>
    public int OutChannels { get; init; } = 1;
    /// <summary>Width of the first level; level i has BaseChannels * ChannelMultipliers[i] channels.</summary>
    public int BaseChannels { get; init; } = 32;
    /// <summary>Channel multiplier of each level; the image is halved between two levels.</summary>
    public int[] ChannelMultipliers { get; init; } = new[] { 1, 2, 2 };
    /// <summary>Residual blocks per level on the way down; NumResBlocks + 1 on the way up.</summary>
    public int NumResBlocks { get; init; } = 2;
    /// <summary>Feature-map sides (pixels) whose blocks are followed by self-attention. The record's default, { 7 }, fits the
    /// default 28-pixel image with three levels only; <see cref="DefaultAttentionResolutions"/> gives the one that fits any size
    /// (the trainer uses it when <c>DiffusionTrainer.Options.AttentionResolutions</c> is not set).</summary>
    public int[] AttentionResolutions { get; init; } = new[] { 7 };
    /// <summary>GroupNorm groups; every level's channel count must be divisible by it.</summary>
    public int GroupNormGroups { get; init; } = 8;
    /// <summary>Self-attention heads; every attended level's channel count must be divisible by it.</summary>
    public int AttentionHeads { get; init; } = 1;
    /// <summary>Dropout inside the residual blocks.</summary>
    public float Dropout { get; init; }
    /// <summary>Classes of a class-conditional network (0: unconditional). When &gt; 0 the network has a learned class
    /// embedding of NumClasses + 1 rows, the last being the null label (classifier-free guidance, Ho &amp; Salimans 2022).
    /// Not written when 0, so unconditional configs (and checkpoint identities) are unchanged.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public int NumClasses { get; init; }

    /// <summary>The largest <see cref="NumClasses"/> accepted.</summary>
    public const int MaxClasses = 100_000;

    /// <summary>The feature-map sides that occur in the network, from the input down.</summary>
    public int[] Resolutions()
    {
        var r = new int[ChannelMultipliers.Length];
        for (int i = 0; i < r.Length; i++) r[i] = ImageSize >> i;
        return r;
    }

    /// <summary>The largest side at which <see cref="DefaultAttentionResolutions"/> puts self-attention: attention over
    /// side x side positions costs (side^2)^2 per head and image, so a larger lowest resolution gets none.</summary>
    public const int MaxDefaultAttentionResolution = 32;

    /// <summary>
    /// The attention resolutions used when none are given: the lowest feature-map side the network reaches,
    /// <paramref name="imageSize"/> / 2^(levels - 1), when it is at most <see cref="MaxDefaultAttentionResolution"/>; none
    /// otherwise. With the default multipliers { 1, 2, 2 }: 7 for 28 pixels (the default model), 8 for 32, 4 for 16.
    /// Sizes that do not halve evenly over the levels give none (validation then names the image size).
    /// </summary>
    /// <param name="imageSize">Side of the grid the network denoises (the latent grid for latent diffusion).</param>
    /// <param name="channelMultipliers">One multiplier per level.</param>
    public static int[] DefaultAttentionResolutions(int imageSize, IReadOnlyList<int> channelMultipliers)
    {
        ArgumentNullException.ThrowIfNull(channelMultipliers);
        int levels = channelMultipliers.Count;
        if (levels < 1 || levels > 12 || imageSize < 1 || imageSize % (1 << (levels - 1)) != 0) return Array.Empty<int>();
        int lowest = imageSize >> (levels - 1);
        return lowest <= MaxDefaultAttentionResolution ? new[] { lowest } : Array.Empty<int>();
    }

    /// <summary>The largest <see cref="ImageSize"/> accepted (a sanity bound that also stops a forged model file from asking for huge tensors).</summary>
    public const int MaxImageSize = 4096;

    /// <summary>
    /// A lower bound on the network's parameter count, computed from the config alone without building the network: the 3x3
    /// convolutions every residual block has (conv2, out x out x 9, in NumResBlocks blocks per level down and NumResBlocks + 1 up;
    /// both convolutions of the two middle blocks) and the class embedding of a class-conditional network. Model loading compares it with the weights present in the file before
    /// allocating the network, so a config edited to describe a huge network cannot make it allocate more than a small multiple
    /// of the file's size. Computed in double precision: never overflows.
    /// </summary>
    public double MinimumParameterCount()
    {
        double total = 0, widest = 0;
        foreach (int m in ChannelMultipliers)
        {
            double width = (double)BaseChannels * m;
            total += 9.0 * width * width * (2.0 * NumResBlocks + 1);
            widest = width;   // the last level's width: the middle blocks'
        }
        // The class embedding: (NumClasses + 1) rows of the time-embedding width 4 x BaseChannels.
        double classEmbedding = NumClasses > 0 ? (NumClasses + 1.0) * 4 * BaseChannels : 0;
        return total + 4 * 9.0 * widest * widest + classEmbedding;
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming the property, its value and what is expected.</summary>
    public void Validate()
    {
        static ArgumentException Bad(string name, object? value, string expected) =>
            new($"UNetConfig.{name} is {value}; {expected}", name);

        if (ImageSize < 1 || ImageSize > MaxImageSize) throw Bad(nameof(ImageSize), ImageSize, $"expected a size in 1..{MaxImageSize}.");
        if (InChannels < 1) throw Bad(nameof(InChannels), InChannels, "expected >= 1.");
        if (OutChannels < 1) throw Bad(nameof(OutChannels), OutChannels, "expected >= 1.");
        if (BaseChannels < 1) throw Bad(nameof(BaseChannels), BaseChannels, "expected >= 1.");
        if (NumResBlocks < 1) throw Bad(nameof(NumResBlocks), NumResBlocks, "expected >= 1.");
        if (GroupNormGroups < 1) throw Bad(nameof(GroupNormGroups), GroupNormGroups, "expected >= 1.");
        if (AttentionHeads < 1) throw Bad(nameof(AttentionHeads), AttentionHeads, "expected >= 1.");
        if (!(Dropout >= 0 && Dropout < 1)) throw Bad(nameof(Dropout), Dropout, "expected a value in [0, 1).");
        if (NumClasses < 0 || NumClasses > MaxClasses) throw Bad(nameof(NumClasses), NumClasses, $"expected 0 (unconditional) .. {MaxClasses}.");
        if (ChannelMultipliers is null || ChannelMultipliers.Length == 0)
            throw Bad(nameof(ChannelMultipliers), "empty", "expected at least one level, e.g. [1, 2, 2].");
        if (ChannelMultipliers.Any(m => m < 1))
            throw Bad(nameof(ChannelMultipliers), $"[{string.Join(", ", ChannelMultipliers)}]", "expected positive multipliers.");
        int levels = ChannelMultipliers.Length;
        if (levels > 12) throw Bad(nameof(ChannelMultipliers), $"{levels} levels", "expected at most 12 levels (the image halves between two).");
        if (ImageSize % (1 << (levels - 1)) != 0)
            throw Bad(nameof(ImageSize), ImageSize,
                $"expected a multiple of {1 << (levels - 1)} so that it halves evenly over {levels} levels (ChannelMultipliers has {levels} entries).");
        foreach (int m in ChannelMultipliers)
        {
            int ch = BaseChannels * m;
            if (ch % GroupNormGroups != 0)
                throw Bad(nameof(GroupNormGroups), GroupNormGroups, $"expected a divisor of every level's width; level width {ch} (BaseChannels {BaseChannels} x {m}) is not divisible.");
        }
        var resolutions = Resolutions();
        foreach (int r in AttentionResolutions ?? Array.Empty<int>())
        {
            int level = Array.IndexOf(resolutions, r);
            if (level < 0)
                throw Bad(nameof(AttentionResolutions), r, $"expected feature-map sides that occur in the network: {string.Join(", ", resolutions)}.");
            if (BaseChannels * ChannelMultipliers[level] % AttentionHeads != 0)
                throw Bad(nameof(AttentionHeads), AttentionHeads, $"expected a divisor of the width {BaseChannels * ChannelMultipliers[level]} at resolution {r}.");
        }
    }

    /// <inheritdoc/>
    public bool Equals(UNetConfig? other) =>
        other is not null && ImageSize == other.ImageSize && InChannels == other.InChannels && OutChannels == other.OutChannels
        && BaseChannels == other.BaseChannels && NumResBlocks == other.NumResBlocks && GroupNormGroups == other.GroupNormGroups
        && AttentionHeads == other.AttentionHeads && Dropout.Equals(other.Dropout) && NumClasses == other.NumClasses
        && ChannelMultipliers.SequenceEqual(other.ChannelMultipliers) && AttentionResolutions.SequenceEqual(other.AttentionResolutions);

    /// <inheritdoc/>
    public override int GetHashCode()
    {
        var h = new HashCode();
        h.Add(ImageSize); h.Add(InChannels); h.Add(OutChannels); h.Add(BaseChannels); h.Add(NumResBlocks);
        h.Add(GroupNormGroups); h.Add(AttentionHeads); h.Add(Dropout); h.Add(NumClasses);
        foreach (var m in ChannelMultipliers) h.Add(m);
        foreach (var r in AttentionResolutions) h.Add(r);
        return h.ToHashCode();
    }
}
