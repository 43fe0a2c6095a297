using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.OnnxRuntime;
using TensorElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Onnx;

/// <summary>
/// The network call (x_t, t, class labels, self-condition, low-resolution image) run by ONNX Runtime on the graph
/// <see cref="UNetOnnxExporter"/> writes (<see cref="InferenceEngine.OnnxRuntime"/>). One <see cref="InferenceSession"/>, made once
/// from the in-memory export and shared by every call; <see cref="InferenceSession.Run(RunOptions, IReadOnlyCollection{string}, IReadOnlyCollection{OrtValue}, IReadOnlyCollection{string}, IReadOnlyCollection{OrtValue})"/>
/// is thread-safe, so concurrent batches may use it. Inputs and the output are bound to the memory of CPU float32 / int64
/// contiguous TorchSharp tensors (<see cref="OrtTensors.Bind"/>: no copy beyond moving them to the CPU); the result moves back
/// to the input's device. The graph's inputs (which conditions it takes) are read from the session.
/// </summary>
internal sealed class OnnxRuntimeNetwork : IDisposable
{
    private readonly InferenceSession _session;
    private readonly UNetConfig _net;
    private readonly int _sampleChannels;
    private readonly bool _selfConditioned;
    private readonly bool _lowResolution;
    private static readonly string[] OutputNames = { UNetOnnxExporter.PredictionOutput };

    /// <summary>Opens a session on <paramref name="onnxModel"/>, the export of a U-Net with hyper-parameters <paramref name="network"/>,
    /// with the library's session settings and <paramref name="env"/>'s GPU request (<see cref="OnnxExecution"/>).</summary>
    public OnnxRuntimeNetwork(byte[] onnxModel, UNetConfig network, Microsoft.ML.Runtime.IHostEnvironment env)
    {
        _net = network;
        _session = OnnxExecution.CreateSession(onnxModel, env, "ONNX Runtime U-Net");
        var inputs = _session.InputMetadata;
        _sampleChannels = inputs[UNetOnnxExporter.SampleInput].Dimensions[1];
        _selfConditioned = inputs.ContainsKey(UNetOnnxExporter.SelfConditionInput);
        _lowResolution = inputs.ContainsKey(UNetOnnxExporter.LowResolutionInput);
    }

    /// <summary>
    /// x: the network input as the TorchSharp U-Net takes it, [B, InChannels, S, S] float: x_t, or concat(x_t, x0_hat) for a
    /// self-conditioned network (split here into the graph's two inputs); t: [B] timesteps, int64 or float (continuous);
    /// labels: [B] int64 or null (the null label of a class-conditional network). Returns [B, OutChannels, S, S] float32 on x's
    /// device. An image-conditioned (super-resolution) network needs the low-resolution image: use the other overload.
    /// </summary>
    public Tensor Forward(Tensor x, Tensor t, Tensor? labels) => Forward(x, t, labels, selfCondition: null, lowResolution: null);

    /// <summary>
    /// The network on its separate inputs: x [B, C, S, S] (x_t; or concat(x_t, x0_hat) when <paramref name="selfCondition"/> is
    /// null and the network is self-conditioned), t [B] (int64 or float), labels [B] int64 or null (the null label),
    /// <paramref name="selfCondition"/> [B, C, S, S] (the previous x_0 estimate; self-conditioned networks only) and
    /// <paramref name="lowResolution"/> [B, Channels, S/f, S/f] (the low-resolution image in [-1, 1], not upsampled:
    /// super-resolution networks only). Tensors already on the CPU, float32 (int64 labels) and contiguous are bound as they are;
    /// others are copied once. Returns [B, OutChannels, S, S] float32 on x's device.
    /// </summary>
    /// <exception cref="ArgumentException">An input the network does not take is given, or one it needs is missing.</exception>
    public Tensor Forward(Tensor x, Tensor t, Tensor? labels, Tensor? selfCondition, Tensor? lowResolution)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(t);
        if (labels is not null && _net.NumClasses == 0)
            throw new ArgumentException("This U-Net is unconditional (UNetConfig.NumClasses = 0); it takes no class labels.", nameof(labels));
        if (selfCondition is not null && !_selfConditioned)
            throw new ArgumentException("This U-Net is not self-conditioned; it takes no self-condition input.", nameof(selfCondition));
        if (lowResolution is not null && !_lowResolution)
            throw new ArgumentException("This U-Net is not image-conditioned; it takes no low-resolution input.", nameof(lowResolution));
        if (lowResolution is null && _lowResolution)
            throw new ArgumentException(
                "This U-Net is a super-resolution network: it needs the low-resolution image (graph input 'low_resolution'), which the " +
                "concatenated network input does not carry (it holds the upsampled image).", nameof(lowResolution));
        long batch = x.shape[0];
        if (t.shape.Length != 1 || t.shape[0] != batch)
            throw new ArgumentException($"t has shape [{string.Join(", ", t.shape)}]; expected [{batch}], one timestep per image.", nameof(t));
        using var scope = NewDisposeScope();
        var xc = OrtTensors.Cpu(x, float32);
        Tensor? sc = selfCondition is null ? null : OrtTensors.Cpu(selfCondition, float32);
        if (_selfConditioned && sc is null)
        {
            // The TorchSharp network's input concat(x_t, x0_hat) (SelfConditioning.Input): the graph takes the halves apart.
            if (xc.shape[1] != 2 * _sampleChannels)
                throw new ArgumentException(
                    $"This U-Net is self-conditioned: x has {xc.shape[1]} channels; expected concat(x_t, x0_hat) of {2 * _sampleChannels}, or x_t and a self-condition.",
                    nameof(x));
            sc = xc.narrow(1, _sampleChannels, _sampleChannels).contiguous();
            xc = xc.narrow(1, 0, _sampleChannels).contiguous();
        }
        if (xc.shape[1] != _sampleChannels)
            throw new ArgumentException($"x has {xc.shape[1]} channels; this U-Net's x_t has {_sampleChannels}.", nameof(x));
        if (sc is not null && !sc.shape.SequenceEqual(xc.shape))
            throw new ArgumentException(
                $"The self-condition has shape [{string.Join(", ", sc.shape)}]; expected x_t's [{string.Join(", ", xc.shape)}].", nameof(selfCondition));
        if (lowResolution is not null && lowResolution.shape[0] != batch)
            throw new ArgumentException(
                $"The low-resolution images have batch {lowResolution.shape[0]}; x_t has {batch} (one low-resolution image per sample).", nameof(lowResolution));
        // The graph takes float32 t: whole-number timesteps convert exactly (T <= 100,000 < 2^24), continuous ones as they are.
        var tc = OrtTensors.Cpu(t, float32);
        var yc = _net.NumClasses == 0 ? null
            : labels is null ? full(new long[] { batch }, (long)_net.NumClasses, dtype: int64)
            : OrtTensors.Cpu(labels, int64);
        var lc = lowResolution is null ? null : OrtTensors.Cpu(lowResolution, float32);
        var output = empty(new long[] { batch, _net.OutChannels, x.shape[2], x.shape[3] }, dtype: float32);

        var names = new List<string>(5);
        var values = new List<OrtValue>(5);
        OrtValue? result = null;
        try
        {
            void Add(string name, Tensor? value)
            {
                if (value is null) return;
                names.Add(name);
                values.Add(OrtTensors.Bind(value));
            }
            Add(UNetOnnxExporter.SampleInput, xc);
            Add(UNetOnnxExporter.TimestepInput, tc);
            Add(UNetOnnxExporter.ClassLabelInput, yc);
            Add(UNetOnnxExporter.SelfConditionInput, sc);
            Add(UNetOnnxExporter.LowResolutionInput, lc);
            result = OrtTensors.Bind(output);
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
        GC.KeepAlive(sc);
        GC.KeepAlive(lc);
        var moved = x.device_type == DeviceType.CPU ? output : output.to(x.device);
        return moved.MoveToOuterDisposeScope();
    }

    public void Dispose() => _session.Dispose();
}

/// <summary>TorchSharp tensors as ONNX Runtime values without copies.</summary>
internal static class OrtTensors
{
    /// <summary><paramref name="x"/> as a CPU, contiguous tensor of <paramref name="dtype"/>: the tensor's own memory when it already
    /// is one (no copy), a copy otherwise.</summary>
    public static Tensor Cpu(Tensor x, ScalarType dtype) => x.detach().to_type(dtype).cpu().contiguous();

    /// <summary>An OrtValue over the memory of <paramref name="cpuContiguous"/> (CPU, contiguous, float32 or int64); valid while the tensor lives.</summary>
    public static unsafe OrtValue Bind(Tensor cpuContiguous)
    {
        var (type, elementSize) = cpuContiguous.dtype switch
        {
            ScalarType.Float32 => (TensorElementType.Float, sizeof(float)),
            ScalarType.Int64 => (TensorElementType.Int64, sizeof(long)),
            _ => throw new ArgumentException($"A {cpuContiguous.dtype} tensor cannot be bound; expected float32 or int64.", nameof(cpuContiguous)),
        };
        // Tensor.bytes of a CPU contiguous tensor spans its native storage: taking its address pins nothing and copies nothing.
        var storage = cpuContiguous.bytes;
        if (storage.Length != cpuContiguous.numel() * elementSize)
            throw new InvalidOperationException($"A {cpuContiguous.dtype} tensor of {cpuContiguous.numel()} elements spans {storage.Length} bytes.");
        fixed (byte* data = storage)
            return OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, type, cpuContiguous.shape, (IntPtr)data, storage.Length);
    }
}
