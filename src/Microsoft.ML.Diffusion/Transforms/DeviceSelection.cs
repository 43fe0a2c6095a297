using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Transforms;

/// <summary>
/// Picks the compute device as ML.NET's TorchSharp trainers do: CUDA when MLContext.GpuDeviceId is set and
/// TorchSharp sees a GPU, else the CPU; with FallbackToCpu = false and no GPU, an error.
/// </summary>
internal static class DeviceSelection
{
    public static Device Select(IHostEnvironment env)
    {
        TorchRuntime.EnsureNativeBackend();
        var internalEnv = env as IHostEnvironmentInternal;
        int? gpu = internalEnv?.GpuDeviceId;
        if (gpu is int id && cuda.is_available())
            return new Device(DeviceType.CUDA, id);
        if (gpu is int requested && internalEnv?.FallbackToCpu == false)
            throw new InvalidOperationException(
                $"MLContext.GpuDeviceId is {requested} and FallbackToCpu is false, but TorchSharp sees no CUDA device. " +
                "Build with -p:TorchBackend=cuda on a machine with an NVIDIA GPU, or set FallbackToCpu = true.");
        return CPU;
    }
}
