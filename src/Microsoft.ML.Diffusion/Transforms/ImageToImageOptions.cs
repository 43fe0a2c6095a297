using Microsoft.ML.Diffusion.Sampling;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Options of <see cref="SdeditEstimator"/>, image-to-image translation with SDEdit (Meng et al. 2022, "SDEdit: Guided Image
/// Synthesis and Editing with Stochastic Differential Equations"): how far each input image is noised (<see cref="Strength"/>) and
/// the sampler that denoises it (<see cref="Sampler"/>), as in diffusers' StableDiffusionImg2ImgPipeline.
/// </summary>
public sealed class ImageToImageOptions
{
    /// <summary>The default <see cref="Strength"/>, diffusers' (StableDiffusionImg2ImgPipeline): 0.8.</summary>
    public const float DefaultStrength = 0.8f;

    /// <summary>
    /// How much of the image is replaced, in [0, 1] (SDEdit's t0; diffusers' <c>strength</c>). With N sampler steps the image is
    /// noised to the level of the loop's step N - min(int(N s), N) and denoised by the remaining min(int(N s), N) steps: 0 returns the
    /// input (no step runs), small values keep its layout and colors, 1 ignores the image and generates from the same noise as
    /// <see cref="DiffusionModel.Generate(int, SamplerOptions?)"/> (diffusers noises the image to the first timestep instead, which
    /// leaves a trace of it only where alpha_bar there is not 0). Default 0.8.
    /// </summary>
    public float Strength { get; set; } = DefaultStrength;

    /// <summary>
    /// The sampler (kind, steps, seed, guidance scale, precision, engine, batch size, progress, cancellation); null (default) uses the
    /// model's <see cref="DiffusionModel.DefaultSampler"/>. Row i draws its noise from a generator seeded with Seed + i, so its output
    /// depends on its own row and these settings only. <see cref="SamplerOptions.Steps"/> is N, the steps of a whole loop; only
    /// the last int(N <see cref="Strength"/>) run. Saved with the transformer except Progress, CancellationToken, Engine and Classifier.
    /// </summary>
    public SamplerOptions? Sampler { get; set; }

    /// <summary>
    /// A class-label column (a key column, or integer numbers 0..NumClasses - 1) for a class-conditional model, or for classifier
    /// guidance (<see cref="SamplerOptions.Classifier"/>): each row is translated towards its own class, with
    /// <see cref="SamplerOptions.GuidanceScale"/>. Null (default): the null label (a class-conditional model samples unconditionally).
    /// </summary>
    public string? LabelColumnName { get; set; }

    /// <summary>For a grayscale model (Channels = 1): false (default) makes a color input image (one whose R, G and B differ
    /// somewhere) an error naming the column and row; true converts color images to their ITU-R BT.601 luma.</summary>
    public bool ConvertToGrayscale { get; set; }

    /// <summary>A copy of these options (and of <see cref="Sampler"/>).</summary>
    public ImageToImageOptions Clone()
    {
        var copy = (ImageToImageOptions)MemberwiseClone();
        copy.Sampler = Sampler?.Clone();
        return copy;
    }

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the setting, its value and what is expected: a
    /// <see cref="Strength"/> outside [0, 1] (NaN included), or invalid <see cref="Sampler"/> settings.</summary>
    /// <param name="timesteps">The model's T.</param>
    public void Validate(int timesteps)
    {
        SdeditSchedule.CheckStrength(Strength, $"{nameof(ImageToImageOptions)}.{nameof(Strength)}");
        Sampler?.Validate(timesteps);
    }
}
