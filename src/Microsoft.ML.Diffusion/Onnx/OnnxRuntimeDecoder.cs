using Microsoft.ML.OnnxRuntime;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Onnx;

/// <summary>
/// The autoencoder's decoder run by ONNX Runtime on the graph <see cref="AutoencoderOnnxExporter"/> writes for
/// <see cref="AutoencoderPart.Decoder"/>: latents [B, Z, s, s] -> images [B, C, S, S] (not clamped). One session, made once and
/// shared (Run is thread-safe); the latents and the result are bound to TorchSharp tensors' memory.
/// </summary>
internal sealed class OnnxRuntimeDecoder : IDisposable
{
    private static readonly string[] InputNames = { AutoencoderOnnxExporter.LatentInput };
    private static readonly string[] OutputNames = { AutoencoderOnnxExporter.ImageName };
    private readonly InferenceSession _session;
    private readonly long[] _image;

    /// <summary>Opens a session on <paramref name="onnxModel"/>, the decoder of an autoencoder of <paramref name="config"/>, with the
    /// library's session settings and <paramref name="env"/>'s GPU request (<see cref="OnnxExecution"/>).</summary>
    public OnnxRuntimeDecoder(byte[] onnxModel, AutoencoderConfig config, Microsoft.ML.Runtime.IHostEnvironment env)
    {
        _session = OnnxExecution.CreateSession(onnxModel, env, "ONNX Runtime decoder");
        _image = new long[] { config.Channels, config.ImageSize, config.ImageSize };
    }

    /// <summary>Decodes latents [B, Z, s, s] (any device) to images [B, C, S, S] float32 on the CPU.</summary>
    public Tensor Decode(Tensor latents)
    {
        ArgumentNullException.ThrowIfNull(latents);
        using var scope = NewDisposeScope();
        var z = OrtTensors.Cpu(latents, float32);
        var output = empty(new[] { z.shape[0] }.Concat(_image).ToArray(), dtype: float32);
        using (var input = OrtTensors.Bind(z))
        using (var result = OrtTensors.Bind(output))
        using (var runOptions = new RunOptions())
            _session.Run(runOptions, InputNames, new[] { input }, OutputNames, new[] { result });
        GC.KeepAlive(z);
        return output.MoveToOuterDisposeScope();
    }

    public void Dispose() => _session.Dispose();
}
