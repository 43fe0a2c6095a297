namespace Microsoft.ML.Diffusion;

/// <summary>Options of <see cref="UpscalingEstimator"/>: the upscaling factor and the RePaint settings.</summary>
public sealed class UpscaleOptions : RePaintOptions
{
    /// <summary>The upscaling factor, 2 or 4: inputs are model size / Factor pixels wide. Default 2.</summary>
    public int Factor { get; set; } = 2;

    /// <summary>A copy of these options.</summary>
    public UpscaleOptions Clone() => (UpscaleOptions)MemberwiseClone();

    /// <inheritdoc/>
    public override void Validate(int timesteps)
    {
        base.Validate(timesteps);
        if (Factor != 2 && Factor != 4)
            throw new ArgumentOutOfRangeException(nameof(Factor), Factor, "UpscaleOptions.Factor must be 2 or 4.");
    }

    /// <summary>Also checks that the model's image size is a multiple of <see cref="Factor"/>.</summary>
    internal void Validate(int timesteps, int imageSize)
    {
        Validate(timesteps);
        if (imageSize % Factor != 0)
            throw new ArgumentOutOfRangeException(nameof(Factor), Factor,
                $"UpscaleOptions.Factor {Factor} does not divide the model's image size {imageSize}; the input would not be a whole number of pixels.");
    }
}
