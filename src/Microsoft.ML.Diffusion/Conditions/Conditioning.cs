namespace Microsoft.ML.Diffusion;

/// <summary>The kind of image conditioning a diffusion model is trained with (see <see cref="Conditioning"/>).</summary>
public enum ConditioningKind
{
    /// <summary>Super-resolution (Saharia et al. 2021, "SR3"): the network also sees the bicubic-upsampled low-resolution image.</summary>
    LowResolution,
}

/// <summary>
/// An image the network receives as extra input channels besides x_t. <see cref="LowResolution"/> trains a conditional
/// super-resolution model in the style of SR3 (Saharia et al. 2021, "Image Super-Resolution via Iterative Refinement",
/// section 2.4) and guided-diffusion's SuperResModel: the input is concat(x_t, upsample(low_res)) along the channels, where
/// low_res is the training image average-pooled by <see cref="Factor"/> and upsample is bicubic interpolation
/// (align_corners false) back to the model's size, clamped to [-1, 1]. Set it as
/// <see cref="DiffusionTrainer.Options.Conditioning"/>; the trained model then upscales images of size
/// ImageSize / Factor and cannot generate from noise alone. A plain serialisable record, saved with the model.
/// </summary>
public sealed record Conditioning
{
    /// <summary>What the extra input is.</summary>
    public ConditioningKind Kind { get; init; } = ConditioningKind.LowResolution;

    /// <summary>The super-resolution factor: the low-resolution image is ImageSize / Factor pixels wide (2 or 4).</summary>
    public int Factor { get; init; } = 2;

    /// <summary>Super-resolution by <paramref name="factor"/> (2 or 4): the network gets the bicubic upsampling of the
    /// image average-pooled by <paramref name="factor"/> as extra channels.</summary>
    public static Conditioning LowResolution(int factor)
    {
        var c = new Conditioning { Kind = ConditioningKind.LowResolution, Factor = factor };
        c.Validate(imageSize: null);
        return c;
    }

    /// <summary>The input channels the conditioning adds to a network for <paramref name="channels"/>-channel images.</summary>
    public int ExtraChannels(int channels) => channels;

    /// <summary>The side of the low-resolution image for a model of <paramref name="imageSize"/> pixels.</summary>
    public int LowResolutionSize(int imageSize) => imageSize / Factor;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> when the kind or factor is unknown, or the factor does not
    /// divide <paramref name="imageSize"/> (when given).</summary>
    public void Validate(int? imageSize)
    {
        if (!Enum.IsDefined(Kind))
            throw new ArgumentOutOfRangeException(nameof(Kind), Kind, $"Unknown conditioning kind; expected one of {string.Join(", ", Enum.GetNames<ConditioningKind>())}.");
        if (Factor != 2 && Factor != 4)
            throw new ArgumentOutOfRangeException(nameof(Factor), Factor, "Conditioning.LowResolution factor must be 2 or 4.");
        if (imageSize is int s && s % Factor != 0)
            throw new ArgumentOutOfRangeException(nameof(Factor), Factor,
                $"Conditioning.LowResolution({Factor}) needs an ImageSize divisible by {Factor}; ImageSize is {s}.");
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Kind}({Factor})";
}
