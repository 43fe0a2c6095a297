using Microsoft.ML.Diffusion.Sampling;

namespace Microsoft.ML.Diffusion;

public sealed partial class SamplerOptions
{
    /// <summary>
    /// Classifier guidance (Dhariwal &amp; Nichol 2021): a noisy classifier trained for this diffusion model
    /// (<c>mlContext.Generative.NoisyClassifier</c>: same noise schedule, T, image size and channels) that steers every step towards
    /// the requested labels with <see cref="ClassifierScale"/>. Needs labels (<see cref="DiffusionModel.Generate(IReadOnlyList{int}, SamplerOptions?)"/>,
    /// <see cref="DiffusionModel.GenerateTensor(IReadOnlyList{uint}, IReadOnlyList{int}, SamplerOptions?)"/>, or requests with a label
    /// column); an unconditional diffusion model then accepts labels too, and a class-conditional one uses them for both
    /// classifier-free guidance and the classifier. Not supported for latent diffusion models, nor by the sigma-space samplers (Euler, Heun,
    /// Euler ancestral: <see cref="Validate"/> names the samplers that support it). Null (default): no classifier guidance.
    /// Not saved with the model.
    /// </summary>
    public NoisyClassifierModel? Classifier { get; set; }

    /// <summary><see cref="Classifier"/> as the sampling pipeline uses it.</summary>
    internal IGuidanceClassifier? GuidanceClassifier => Classifier;
}
