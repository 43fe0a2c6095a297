namespace Microsoft.ML.Diffusion;

/// <summary>Where the network calls of sampling run (<see cref="SamplerOptions.Engine"/>; <see cref="RePaintOptions.Engine"/> for
/// inpainting and upscaling). The sampler's own arithmetic (the scheduler loop, noise, guidance, RePaint's merge of known
/// pixels) always runs on TorchSharp tensors.</summary>
public enum InferenceEngine
{
    /// <summary>The TorchSharp U-Net (default): every model, every sampler and precision.</summary>
    TorchSharp,

    /// <summary>
    /// ONNX Runtime (CPU) runs the network exported by <see cref="DiffusionModel.ExportOnnx(System.IO.Stream)"/>: one inference
    /// session per model, made on first use from the in-memory export and freed with the model. Covers every model the library
    /// trains (unconditional, class-conditional with classifier-free guidance, learned variance, self-conditioned,
    /// super-resolution, and latent models, whose decoder then runs on ONNX Runtime too) with every sampler, continuous-time ones
    /// (EulerKarras, HeunKarras) included, at <see cref="Precision.Fp32"/>; <see cref="Precision.Bf16Mixed"/> throws
    /// <see cref="NotSupportedException"/>. With classifier guidance (<see cref="SamplerOptions.Classifier"/>) the diffusion network
    /// runs on ONNX Runtime and the classifier's gradient on TorchSharp (an inference graph has no gradients). Images agree with
    /// <see cref="TorchSharp"/> to float32 rounding.
    /// </summary>
    OnnxRuntime,
}
