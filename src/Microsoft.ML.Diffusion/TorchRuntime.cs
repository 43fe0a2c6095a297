using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Process-wide settings of the native backend, applied when this assembly loads (before its first tensor op).
/// </summary>
/// <remarks>
/// On AMD EPYC (Zen) virtual machines with AVX-512 (this project's build and CI machines), libtorch 2.10's AVX-512
/// kernels (1) return NaN or wrong values at random, more often the busier the machine is, mostly in oneDNN's
/// convolution backward, and (2) give results that differ in the last bits from one process to another, so a saved
/// model would not reproduce its images exactly elsewhere. With AVX2 kernels both are gone in our tests (and
/// <see cref="Models.PaddedConv2d"/> keeps narrow layers on wide kernels; the training loop recomputes a step whose
/// loss or gradients are not finite). On such CPUs this sets, in the process environment and only where not set
/// already, <c>DNNL_MAX_CPU_ISA=AVX2</c> (oneDNN), <c>ATEN_CPU_CAPABILITY=avx2</c> (libtorch's own kernels) and
/// <c>MKL_ENABLE_INSTRUCTIONS=AVX2</c> (MKL). Set <c>DNNL_MAX_CPU_ISA</c> yourself (e.g. to <c>ALL</c>) to keep the
/// AVX-512 kernels: about 1.5x faster convolutions, without these guarantees.
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
            foreach (var (name, value) in new[] { ("DNNL_MAX_CPU_ISA", "AVX2"), ("ATEN_CPU_CAPABILITY", "avx2"), ("MKL_ENABLE_INSTRUCTIONS", "AVX2") })
            {
                if (Environment.GetEnvironmentVariable(name) is not null) continue;
                if (setenv(name, value, 0) == 0) Environment.SetEnvironmentVariable(name, value);
            }
            AppliedOneDnnIsaLimit = "AVX2";
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
