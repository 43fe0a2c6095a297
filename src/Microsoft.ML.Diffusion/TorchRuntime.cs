using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Process-wide settings of the native backend, applied when this assembly loads (before its first tensor op).
/// </summary>
/// <remarks>
/// libtorch 2.10's oneDNN convolution backward, with its AVX-512 kernels and more than one thread, returns NaN
/// gradients for some shapes (e.g. 32 -> 8 channels, 3x3, 28x28) on AMD Zen CPUs, at random, mostly on the first
/// call of a process; training then stops with a NaN loss. Limiting oneDNN to AVX2 kernels avoids it (verified
/// on AMD EPYC, 2 cores). On AMD CPUs with AVX-512 this sets <c>DNNL_MAX_CPU_ISA=AVX2</c> in the process
/// environment unless the variable is already set. Set <c>DNNL_MAX_CPU_ISA</c> yourself to choose otherwise.
/// </remarks>
public static class TorchRuntime
{
    private static int _initialized;

    /// <summary>The oneDNN ISA limit applied by this library, or null when none was applied.</summary>
    public static string? AppliedOneDnnIsaLimit { get; private set; }

#pragma warning disable CA2255 // The settings must precede the first tensor op, which may come from any entry point of the library.
    [ModuleInitializer]
    internal static void OnLoad() => EnsureInitialized();
#pragma warning restore CA2255

    /// <summary>Applies the settings once; call it before any TorchSharp use if TorchSharp runs before this library loads.</summary>
    public static void EnsureInitialized()
    {
        if (Interlocked.Exchange(ref _initialized, 1) == 1) return;
        try
        {
            if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64) return;
            if (Environment.GetEnvironmentVariable("DNNL_MAX_CPU_ISA") is not null ||
                Environment.GetEnvironmentVariable("ONEDNN_MAX_CPU_ISA") is not null) return;
            if (!IsAmdWithAvx512()) return;
            // .NET's Environment.SetEnvironmentVariable does not reach the native environment on Unix: call libc.
            if (setenv("DNNL_MAX_CPU_ISA", "AVX2", 0) == 0)
            {
                Environment.SetEnvironmentVariable("DNNL_MAX_CPU_ISA", "AVX2");
                AppliedOneDnnIsaLimit = "AVX2";
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or DllNotFoundException or EntryPointNotFoundException)
        {
            // Settings are best effort: without them the library still works, with the backend's defaults.
        }
    }

    private static bool IsAmdWithAvx512()
    {
        const string cpuinfo = "/proc/cpuinfo";
        if (!File.Exists(cpuinfo)) return false;
        bool amd = false, avx512 = false;
        foreach (var line in File.ReadLines(cpuinfo))
        {
            if (line.StartsWith("vendor_id", StringComparison.Ordinal)) amd |= line.Contains("AuthenticAMD", StringComparison.Ordinal);
            else if (line.StartsWith("flags", StringComparison.Ordinal)) avx512 |= line.Contains(" avx512f", StringComparison.Ordinal);
            if (amd && avx512) return true;
            if (line.Length == 0) break; // first processor only
        }
        return amd && avx512;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int setenv(string name, string value, int overwrite);
}
