namespace Microsoft.ML.Diffusion;

/// <summary>
/// Hyper-parameters of the KL autoencoder: the KL-regularised convolutional autoencoder of latent diffusion
/// (Rombach et al. 2022, appendix G; the structure of diffusers' AutoencoderKL), scaled down. A plain serialisable record.
/// </summary>
public sealed record AutoencoderConfig
{
    /// <summary>Image side in pixels; divisible by <see cref="DownsamplingFactor"/>.</summary>
    public int ImageSize { get; init; } = 32;
    /// <summary>Image channels: 1 (grayscale) or 3 (RGB).</summary>
    public int Channels { get; init; } = 3;
    /// <summary>Channels of the latent z (LDM: 4).</summary>
    public int LatentChannels { get; init; } = 4;
    /// <summary>The latent grid is ImageSize / DownsamplingFactor: 2, 4 or 8 (LDM's f).</summary>
    public int DownsamplingFactor { get; init; } = 4;
    /// <summary>Width of the first level.</summary>
    public int BaseChannels { get; init; } = 32;
    /// <summary>Width multiplier per level; log2(DownsamplingFactor) + 1 levels (the image halves between two).</summary>
    public int[] ChannelMultipliers { get; init; } = new[] { 1, 2, 2 };
    /// <summary>Residual blocks per level in the encoder (the decoder has one more, as in diffusers).</summary>
    public int NumResBlocks { get; init; } = 1;
    /// <summary>GroupNorm groups; every level's width must be divisible by it.</summary>
    public int GroupNormGroups { get; init; } = 8;

    /// <summary>The factors accepted.</summary>
    public static readonly int[] SupportedFactors = { 2, 4, 8 };

    /// <summary>Side of the latent grid.</summary>
    public int LatentSize => ImageSize / DownsamplingFactor;

    /// <summary>The number of levels a factor needs: log2(f) + 1.</summary>
    public static int LevelsFor(int factor) => factor switch { 2 => 2, 4 => 3, 8 => 4, _ => 0 };

    /// <summary>Default multipliers for a factor: [1, 2, 2], [1, 2], [1, 2, 2, 4].</summary>
    public static int[] DefaultMultipliers(int factor) => factor switch
    {
        2 => new[] { 1, 2 },
        8 => new[] { 1, 2, 2, 4 },
        _ => new[] { 1, 2, 2 },
    };

    /// <summary>Throws <see cref="ArgumentException"/> naming the field, its value and what is expected.</summary>
    public void Validate()
    {
        static ArgumentException Bad(string field, object? value, string expected) =>
            new($"Autoencoder {field} = {value}: {expected}", field);

        if (Channels != 1 && Channels != 3) throw Bad(nameof(Channels), Channels, "expected 1 (grayscale) or 3 (RGB).");
        if (LatentChannels < 1 || LatentChannels > 64) throw Bad(nameof(LatentChannels), LatentChannels, "expected 1..64 (LDM uses 4).");
        if (!SupportedFactors.Contains(DownsamplingFactor))
            throw Bad(nameof(DownsamplingFactor), DownsamplingFactor, "expected 2, 4 or 8.");
        if (ImageSize < DownsamplingFactor || ImageSize > UNetConfig.MaxImageSize || ImageSize % DownsamplingFactor != 0)
            throw Bad(nameof(ImageSize), ImageSize, $"expected a multiple of the downsampling factor {DownsamplingFactor} (at most {UNetConfig.MaxImageSize}).");
        if (BaseChannels < 1 || BaseChannels > 4096) throw Bad(nameof(BaseChannels), BaseChannels, "expected 1..4096.");
        if (NumResBlocks < 1 || NumResBlocks > 16) throw Bad(nameof(NumResBlocks), NumResBlocks, "expected 1..16.");
        if (GroupNormGroups < 1) throw Bad(nameof(GroupNormGroups), GroupNormGroups, "expected >= 1.");
        if (ChannelMultipliers is null || ChannelMultipliers.Length != LevelsFor(DownsamplingFactor))
            throw Bad(nameof(ChannelMultipliers), ChannelMultipliers is null ? "null" : $"[{string.Join(", ", ChannelMultipliers)}]",
                $"expected {LevelsFor(DownsamplingFactor)} levels for factor {DownsamplingFactor}, e.g. [{string.Join(", ", DefaultMultipliers(DownsamplingFactor))}].");
        foreach (int m in ChannelMultipliers)
        {
            if (m < 1 || m > 64) throw Bad(nameof(ChannelMultipliers), $"[{string.Join(", ", ChannelMultipliers)}]", "expected multipliers in 1..64.");
            if (BaseChannels * m % GroupNormGroups != 0)
                throw Bad(nameof(GroupNormGroups), GroupNormGroups, $"expected a divisor of every level's width; width {BaseChannels * m} (BaseChannels {BaseChannels} x {m}) is not divisible.");
        }
    }

    /// <summary>A lower bound on the parameter count (the 3x3 convolutions of the residual blocks), to check a model file
    /// against before allocating the network.</summary>
    public double MinimumParameterCount()
    {
        double total = 0;
        foreach (int m in ChannelMultipliers)
        {
            double w = (double)BaseChannels * m;
            total += (2 * NumResBlocks + 1) * 9 * w * w;   // the second conv (w -> w) of each encoder and decoder residual block
        }
        return total;
    }
}
