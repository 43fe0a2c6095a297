using System.CommandLine;

namespace Microsoft.ML.Diffusion.Samples.Cli;

/// <summary>
/// The <c>--engine</c> option of generate, inpaint, upscale, demo and evaluate: where the network runs
/// (<see cref="InferenceEngine"/>; the names are case-insensitive, so <c>torchsharp</c> and <c>onnxruntime</c> work).
/// </summary>
public static class EngineOption
{
    /// <summary>
    /// The engine of every command (and of the demo run without a command) when <c>--engine</c> is not given. The one line to change
    /// to make ONNX Runtime the CLI's default. The demo's PNGs in docs/ were written with TorchSharp: a switch changes their bytes
    /// (within 2 grey levels).
    /// </summary>
    public const InferenceEngine Default = InferenceEngine.TorchSharp;

    /// <summary>A new <c>--engine</c> option defaulting to <see cref="Default"/>.</summary>
    public static Option<InferenceEngine> Create() => new("--engine")
    {
        Description = "Where the network runs: torchsharp, or onnxruntime (the exported graph in ONNX Runtime; Fp32 only)",
        DefaultValueFactory = _ => Default,
    };
}
