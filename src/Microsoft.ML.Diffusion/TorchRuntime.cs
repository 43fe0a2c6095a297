using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Process-wide settings of the native backend, applied when this assembly loads (before its first tensor op).
/// </summary>
/// <remarks>
/// libtorch 2.10's oneDNN 3.7 convolutions with AVX-512 kernels, on AMD Zen CPUs with AVX-512 (seen on AMD EPYC,
/// 2 cores), (1) return NaN or wrong gradients at random, with more than one thread, for layers with few channels,
/// and (2) give results that differ in the last bits from one process to another, so a saved model would not
/// reproduce its images exactly in another process. With oneDNN limited to its AVX2 kernels both are gone (and
/// <see cref="Models.PaddedConv2d"/> keeps narrow layers on wide kernels). On such CPUs this sets
/// <c>DNNL_MAX_CPU_ISA=AVX2</c> in the process environment, unless <c>DNNL_MAX_CPU_ISA</c> or
/// <c>ONEDNN_MAX_CPU_ISA</c> is already set: set it yourself (e.g. to <c>ALL</c>) to trade these guarantees for
/// about 1.5x faster convolutions.
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
