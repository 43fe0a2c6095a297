using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Sampling;

/// <summary>
/// What classifier guidance (<see cref="ClassifierGuidance"/>, Dhariwal &amp; Nichol 2021) needs of a noisy classifier: its classes,
/// a check that it was trained for the diffusion model, and g = grad_x log p(y | x_t, t). <see cref="NoisyClassifierModel"/>
/// implements it; the pipeline sees only this.
/// </summary>
internal interface IGuidanceClassifier
{
    /// <summary>The number of classes; labels run 0 .. NumClasses - 1.</summary>
    int NumClasses { get; }

    /// <summary>Throws unless the classifier fits the diffusion model described by <paramref name="model"/> (noise schedule, T, image
    /// size, channels; not a latent model); the message names SamplerOptions.Classifier, both values and what is expected.</summary>
    void CheckCompatible(DiffusionModelConfig model);

    /// <summary>g = grad_x log p(y | x_t, t) for labels <paramref name="labels"/> [B] (int64), shaped like <paramref name="x"/>.</summary>
    Tensor LogProbabilityGradient(Tensor x, Tensor t, Tensor labels);
}
