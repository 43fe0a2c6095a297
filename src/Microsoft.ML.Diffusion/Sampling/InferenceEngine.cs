namespace Microsoft.ML.Diffusion;

/// <summary>Where the network calls of sampling run (<see cref="SamplerOptions.Engine"/>). The sampler's own arithmetic (the
/// scheduler loop, noise, guidance) always runs on TorchSharp tensors.</summary>
public enum InferenceEngine
{
    /// <summary>The TorchSharp U-Net (default): every model, every sampler and precision.</summary>
    TorchSharp,

    /// <summary>
    /// ONNX Runtime (CPU) runs the network exported by <see cref="DiffusionModel.ExportOnnx(System.IO.Stream)"/>: one inference
    /// session per model, made on first use and freed with the model. Covers the models ExportOnnx covers (pixel space, no
    /// self-conditioning or image conditioning) with samplers whose network timesteps are whole numbers (DDPM, DDIM,
    /// DPM-Solver++, and Euler ancestral when its timesteps land on whole numbers; not EulerKarras or HeunKarras) at
    /// <see cref="Precision.Fp32"/>; anything else throws
    /// <see cref="NotSupportedException"/> naming what is not covered. Images agree with <see cref="TorchSharp"/> to float32
    /// rounding. Inpainting (RePaint) still runs on TorchSharp.
    /// </summary>
    OnnxRuntime,
}
