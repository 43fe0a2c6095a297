using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.OnnxRuntime;
using TensorElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Onnx;

/// <summary>
/// The network call (x_t, t, class labels) run by ONNX Runtime on the graph <see cref="UNetOnnxExporter"/> writes
/// (<see cref="InferenceEngine.OnnxRuntime"/>). One <see cref="InferenceSession"/>, made once from the in-memory export and
/// shared by every call; <see cref="InferenceSession.Run(RunOptions, IReadOnlyCollection{string}, IReadOnlyCollection{OrtValue}, IReadOnlyCollection{string}, IReadOnlyCollection{OrtValue})"/>
/// is thread-safe, so concurrent batches may use it. Inputs and the output are bound to the memory of CPU float32 / int64
/// contiguous TorchSharp tensors (no copy beyond moving them to the CPU); the result moves back to the input's device.
/// </summary>
internal sealed class OnnxRuntimeNetwork : IDisposable
{
    private readonly InferenceSession _session;
    private readonly UNetConfig _net;
    private static readonly string[] OutputNames = { UNetOnnxExporter.PredictionOutput };

    public OnnxRuntimeNetwork(byte[] onnxModel, UNetConfig network)
    {
        _net = network;
        _session = new InferenceSession(onnxModel);
    }

    /// <summary>x: [B, InChannels, S, S] float; t: [B] int64 timesteps; labels: [B] int64 or null (the null label of a
    /// class-conditional network). Returns [B, OutChannels, S, S] float32 on x's device.</summary>
    /// <exception cref="NotSupportedException">t is not int64 (a sampler with continuous timesteps).</exception>
    public Tensor Forward(Tensor x, Tensor t, Tensor? labels)
    {
        if (t.dtype != ScalarType.Int64)
            throw new NotSupportedException(
                "SamplerOptions.Engine = InferenceEngine.OnnxRuntime needs whole-number timesteps (the exported graph takes int64 t), but " +
                "this sampler calls the network at continuous timesteps (the Karras-sigma samplers EulerKarras and HeunKarras do); " +
                "use InferenceEngine.TorchSharp, or a DDPM, DDIM or DPM-Solver++ sampler.");
        if (labels is not null && _net.NumClasses == 0)
            throw new ArgumentException("This U-Net is unconditional (UNetConfig.NumClasses = 0); it takes no class labels.", nameof(labels));
        long batch = x.shape[0];
        using var scope = NewDisposeScope();
        var xc = x.detach().to_type(float32).cpu().contiguous();
        var tc = t.detach().cpu().contiguous();
        var yc = _net.NumClasses == 0 ? null
            : labels is null ? full(new long[] { batch }, (long)_net.NumClasses, dtype: int64)
            : labels.detach().to_type(int64).cpu().contiguous();
        var output = empty(new long[] { batch, _net.OutChannels, x.shape[2], x.shape[3] }, dtype: float32);

        var names = new List<string> { UNetOnnxExporter.SampleInput, UNetOnnxExporter.TimestepInput };
        var values = new List<OrtValue> { Bind(xc, TensorElementType.Float, sizeof(float)), Bind(tc, TensorElementType.Int64, sizeof(long)) };
        OrtValue? result = null;
        try
        {
            if (yc is not null)
            {
                names.Add(UNetOnnxExporter.ClassLabelInput);
                values.Add(Bind(yc, TensorElementType.Int64, sizeof(long)));
            }
            result = Bind(output, TensorElementType.Float, sizeof(float));
            using var runOptions = new RunOptions();
            _session.Run(runOptions, names, values, OutputNames, new[] { result });
        }
        finally
        {
            result?.Dispose();
            foreach (var v in values) v.Dispose();
        }
        // The OrtValues only borrowed the tensors' memory; the tensors stayed alive (this scope) until Run returned.
        GC.KeepAlive(xc);
        GC.KeepAlive(tc);
        GC.KeepAlive(yc);
        var moved = x.device_type == DeviceType.CPU ? output : output.to(x.device);
        return moved.MoveToOuterDisposeScope();
    }

    /// <summary>An OrtValue over the memory of <paramref name="cpuContiguous"/> (CPU, contiguous); valid while the tensor lives.</summary>
    private static unsafe OrtValue Bind(Tensor cpuContiguous, TensorElementType type, int elementSize)
    {
        // Tensor.bytes of a CPU contiguous tensor spans its native storage: taking its address pins nothing and copies nothing.
        var storage = cpuContiguous.bytes;
        if (storage.Length != cpuContiguous.numel() * elementSize)
            throw new InvalidOperationException($"A {cpuContiguous.dtype} tensor of {cpuContiguous.numel()} elements spans {storage.Length} bytes.");
        fixed (byte* data = storage)
            return OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, type, cpuContiguous.shape, (IntPtr)data, storage.Length);
    }

    public void Dispose() => _session.Dispose();
}
