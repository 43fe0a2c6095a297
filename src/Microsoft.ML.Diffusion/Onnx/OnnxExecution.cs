using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Diffusion.Onnx;

/// <summary>
/// The one place where the library's ONNX Runtime sessions (<see cref="InferenceEngine.OnnxRuntime"/>: the U-Net, the latent
/// decoder) get their settings:
/// <list type="bullet">
/// <item>graph optimisation <see cref="GraphOptimizationLevel.ORT_ENABLE_ALL"/> (constant folding, Conv+activation fusion,
/// layout transforms to NCHWc for MLAS);</item>
/// <item>intra-op threads = TorchSharp's thread count (<c>torch.get_num_threads()</c>, which the TorchSharp engine sets for this
/// process), so both engines use the same cores; inter-op threads 1 and sequential execution (a U-Net is one chain of ops);</item>
/// <item>no spin-waiting of the intra-op threads (<c>session.intra_op.allow_spinning = 0</c>): on a machine whose cores are shared
/// (other sessions, TorchSharp's own threads, the host app) spinning threads burn the cores the work needs; on this project's
/// 2-core machines it measured no slower (docs/engineering/onnx-engine.md);</item>
/// <item>the CUDA execution provider when <c>MLContext.GpuDeviceId</c> is set (ML.NET's convention, as
/// <see cref="Transforms.DeviceSelection"/> for TorchSharp). The library references the CPU package Microsoft.ML.OnnxRuntime; an app that
/// references Microsoft.ML.OnnxRuntime.Gpu.Linux (or .Gpu.Windows) instead gets the CUDA provider. Without it, or without a
/// usable CUDA device, <c>FallbackToCpu = true</c> runs on the CPU and logs why (a warning on the MLContext log);
/// <c>FallbackToCpu = false</c> throws an <see cref="InvalidOperationException"/> saying what to reference.</item>
/// </list>
/// </summary>
internal static class OnnxExecution
{
    /// <summary>The name ONNX Runtime gives its CUDA execution provider.</summary>
    internal const string CudaProvider = "CUDAExecutionProvider";

    /// <summary>Session config key: whether idle intra-op threads spin before sleeping.</summary>
    internal const string AllowSpinningKey = "session.intra_op.allow_spinning";

    /// <summary>Where a session runs: the CUDA device it was given, or null for the CPU.</summary>
    internal readonly record struct Placement(int? CudaDevice, string? Warning);

    /// <summary>The GPU request of <paramref name="env"/> (MLContext.GpuDeviceId and FallbackToCpu); none for other environments.</summary>
    internal static (int? GpuDeviceId, bool FallbackToCpu) GpuRequest(IHostEnvironment env)
    {
        var internalEnv = env as IHostEnvironmentInternal;
        return (internalEnv?.GpuDeviceId, internalEnv?.FallbackToCpu ?? true);
    }

    /// <summary>
    /// Opens a session on <paramref name="onnxModel"/> with <see cref="CreateOptions(int?, bool, out Placement)"/> for the GPU request of <paramref name="env"/>;
    /// a fallback to the CPU is logged as a warning on <paramref name="env"/>'s channel named <paramref name="what"/>.
    /// </summary>
    public static InferenceSession CreateSession(byte[] onnxModel, IHostEnvironment env, string what)
    {
        var (gpu, fallback) = GpuRequest(env);
        using var options = CreateOptions(gpu, fallback, out var placement);
        if (placement.Warning is { } warning)
        {
            using var channel = env.Register(nameof(OnnxExecution)).Start(what);
            channel.Warning(warning);
        }
        return new InferenceSession(onnxModel, options);
    }

    /// <summary>
    /// The session options described on <see cref="OnnxExecution"/>. With <paramref name="gpuDeviceId"/> set, the CUDA execution
    /// provider is appended when this process's ONNX Runtime has it (<see cref="OrtEnv.GetAvailableProviders"/>) and it accepts the
    /// device; otherwise <paramref name="fallbackToCpu"/> decides: true gives CPU options and a <see cref="Placement.Warning"/>
    /// saying why, false throws.
    /// </summary>
    /// <exception cref="InvalidOperationException">CUDA was asked for, is not usable, and <paramref name="fallbackToCpu"/> is false;
    /// the message names GpuDeviceId, the reason and the package to reference.</exception>
    public static SessionOptions CreateOptions(int? gpuDeviceId, bool fallbackToCpu, out Placement placement) =>
        CreateOptions(gpuDeviceId, fallbackToCpu, OrtEnv.Instance().GetAvailableProviders(), out placement);

    /// <summary><see cref="CreateOptions(int?, bool, out Placement)"/> with the available providers given (tests pretend a GPU build).</summary>
    internal static SessionOptions CreateOptions(int? gpuDeviceId, bool fallbackToCpu, IReadOnlyCollection<string> availableProviders,
        out Placement placement)
    {
        if (gpuDeviceId is < 0)
            throw new ArgumentOutOfRangeException(nameof(gpuDeviceId), gpuDeviceId, "MLContext.GpuDeviceId must be >= 0 (a CUDA device index) or null for the CPU.");
        var options = new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            IntraOpNumThreads = Math.Max(1, TorchSharp.torch.get_num_threads()),
            InterOpNumThreads = 1,
        };
        try
        {
            options.AddSessionConfigEntry(AllowSpinningKey, "0");
            placement = new Placement(null, null);
            if (gpuDeviceId is not int device) return options;
            string? reason = null;
            if (!availableProviders.Contains(CudaProvider))
            {
                reason = $"this process's ONNX Runtime has no CUDA execution provider (available: {string.Join(", ", availableProviders)}): " +
                    "the app references the CPU package Microsoft.ML.OnnxRuntime; reference Microsoft.ML.OnnxRuntime.Gpu.Linux " +
                    "(or Microsoft.ML.OnnxRuntime.Gpu.Windows) of the same version instead, with CUDA 12 and cuDNN 9 installed";
            }
            else
            {
                try
                {
                    options.AppendExecutionProvider_CUDA(device);
                    placement = new Placement(device, null);
                    return options;
                }
                catch (Exception e) when (e is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
                {
                    reason = $"ONNX Runtime's CUDA execution provider refused device {device} ({e.Message}); check the CUDA 12 and cuDNN 9 installation and the device index";
                }
            }
            if (!fallbackToCpu)
                throw new InvalidOperationException(
                    $"MLContext.GpuDeviceId is {device} and FallbackToCpu is false, but the ONNX Runtime engine (InferenceEngine.OnnxRuntime) " +
                    $"cannot use CUDA: {reason}. Or set FallbackToCpu = true to run on the CPU.");
            placement = new Placement(null,
                $"MLContext.GpuDeviceId is {device}, but the ONNX Runtime engine runs on the CPU (FallbackToCpu is true): {reason}.");
            return options;
        }
        catch
        {
            options.Dispose();
            throw;
        }
    }
}
