using Microsoft.ML.Diffusion.Imaging;

namespace Microsoft.ML.Diffusion;

/// <summary>Options of <see cref="InpaintingEstimator"/>: the RePaint settings and the built-in mask used without a mask column.</summary>
public sealed class InpaintOptions : RePaintOptions
{
    /// <summary>The built-in mask of each row when the transform has no mask column (row i's random mask is seeded with Seed + i).
    /// Default <see cref="InpaintMaskKind.Thin"/>.</summary>
    public InpaintMaskKind Mask { get; set; } = InpaintMaskKind.Thin;

    /// <summary>A copy of these options.</summary>
    public InpaintOptions Clone() => (InpaintOptions)MemberwiseClone();

    /// <inheritdoc/>
    public override void Validate(int timesteps)
    {
        base.Validate(timesteps);
        if (!Enum.IsDefined(Mask))
            throw new ArgumentOutOfRangeException(nameof(Mask), Mask, $"Unknown mask; expected one of {string.Join(", ", Enum.GetNames<InpaintMaskKind>())}.");
    }
}
