namespace Microsoft.ML.Diffusion;

/// <summary>
/// Hyper-parameters of the noisy classifier network (the U-Net's encoder half plus guided-diffusion's pooling head);
/// a plain serialisable record saved as JSON in model zips. Equality compares the arrays by content.
/// </summary>
public sealed record NoisyClassifierConfig
{
    /// <summary>Image side in pixels (the diffusion model's).</summary>
    public int ImageSize { get; init; } = 28;
    /// <summary>Image channels (the diffusion model's: 1 grayscale, 3 RGB).</summary>
    public int InChannels { get; init; } = 1;
    /// <summary>Width of the first level; level i has BaseChannels * ChannelMultipliers[i] channels.</summary>
    public int BaseChannels { get; init; } = 32;
    /// <summary>Channel multiplier of each level; the image is halved between two levels.</summary>
    public int[] ChannelMultipliers { get; init; } = new[] { 1, 2, 2 };
    /// <summary>Residual blocks per level.</summary>
    public int NumResBlocks { get; init; } = 1;
    /// <summary>Feature-map sides (pixels) whose blocks are followed by self-attention.</summary>
    public int[] AttentionResolutions { get; init; } = new[] { 7 };
    /// <summary>GroupNorm groups; every level's channel count must be divisible by it.</summary>
    public int GroupNormGroups { get; init; } = 8;
    /// <summary>Self-attention heads.</summary>
    public int AttentionHeads { get; init; } = 1;
    /// <summary>Dropout inside the residual blocks.</summary>
    public float Dropout { get; init; }
    /// <summary>Number of classes (logits), at least 2.</summary>
    public int NumClasses { get; init; } = 10;

    /// <summary>The U-Net config whose encoder half this network is (validated by <see cref="UNetConfig.Validate"/>).</summary>
    public UNetConfig ToEncoderConfig() => new()
    {
        ImageSize = ImageSize, InChannels = InChannels, OutChannels = InChannels, BaseChannels = BaseChannels,
        ChannelMultipliers = ChannelMultipliers, NumResBlocks = NumResBlocks, AttentionResolutions = AttentionResolutions,
        GroupNormGroups = GroupNormGroups, AttentionHeads = AttentionHeads, Dropout = Dropout,
    };

    /// <summary>
    /// A lower bound on the network's parameter count from the config alone (the second 3x3 convolution of every down
    /// residual block, both convolutions of the two middle blocks, and the head's weight matrix); model loading compares it with the
    /// weights in the file before allocating the network, so an edited config cannot make it allocate much more than the file holds.
    /// </summary>
    public double MinimumParameterCount()
    {
        double total = 0, widest = 0;
        foreach (int m in ChannelMultipliers)
        {
            double width = (double)BaseChannels * m;
            total += 9.0 * width * width * NumResBlocks;
            widest = width;
        }
        return total + 4 * 9.0 * widest * widest + widest * NumClasses;
    }

    /// <summary>Throws <see cref="ArgumentException"/> naming the property, its value and what is expected.</summary>
    public void Validate()
    {
        if (NumClasses < 2 || NumClasses > UNetConfig.MaxClasses)
            throw new ArgumentOutOfRangeException(nameof(NumClasses), NumClasses,
                $"NoisyClassifierConfig.NumClasses is {NumClasses}; expected 2..{UNetConfig.MaxClasses} classes.");
        try
        {
            ToEncoderConfig().Validate();
        }
        catch (ArgumentException e)
        {
            string inner = e.Message.Replace($" (Parameter '{e.ParamName}')", string.Empty).Replace("UNetConfig.", "NoisyClassifierConfig.");
            throw new ArgumentException(inner, e.ParamName, e);
        }
    }

    /// <inheritdoc/>
    public bool Equals(NoisyClassifierConfig? other) =>
        other is not null && ToEncoderConfig().Equals(other.ToEncoderConfig()) && NumClasses == other.NumClasses;

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(ToEncoderConfig(), NumClasses);
}
