using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Sampling;

/// <summary>
/// What one run of the <see cref="SamplingPipeline"/> samples: one image per seed, and what conditions it. Tensors are borrowed
/// (the pipeline neither keeps nor disposes them); each has one row per seed.
/// </summary>
/// <param name="Seeds">Image i draws x_T and its per-step noise from a generator seeded with Seeds[i].</param>
/// <param name="Options">The sampler settings (validated by the pipeline).</param>
internal sealed record SamplingRequest(IReadOnlyList<uint> Seeds, SamplerOptions Options)
{
    /// <summary>[N, C, H, W]: x_T itself instead of the per-seed draw (interpolation's slerped noise).</summary>
    public Tensor? InitialNoise { get; init; }

    /// <summary>Class indices of a class-conditional model (NumClasses = the null label), or the classifier's labels with
    /// classifier guidance; null samples with the null label.</summary>
    public long[]? Classes { get; init; }

    /// <summary>[N, Cc, H, W]: channels appended to the TorchSharp network's input (SR3's upsampled low-resolution image).</summary>
    public Tensor? ConditionChannels { get; init; }

    /// <summary>[N, C, S/f, S/f]: the low-resolution image of a super-resolution model, which the ONNX graph takes as its own input.</summary>
    public Tensor? LowResolution { get; init; }

    /// <summary>[N, C, S, S] pixels in [-1, 1] (CPU): SDEdit's inputs (Meng et al. 2022), noised to <see cref="StartStep"/> and
    /// denoised from there; a latent model encodes them first (z = s E(x)).</summary>
    public Tensor? InitialImages { get; init; }

    /// <summary>With <see cref="InitialImages"/>: the number of sampler steps skipped (SDEdit's strength); 0 starts from x_T.</summary>
    public int StartStep { get; init; }

    /// <summary>The number of sampler steps after which the loop stops and returns the sample as it is then (not yet denoised
    /// to x_0, not decoded by a latent model); null runs every step and returns x_0.</summary>
    public int? EndStep { get; init; }
}
