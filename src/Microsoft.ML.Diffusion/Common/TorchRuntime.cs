using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Process-wide settings of the native backend, applied when this assembly loads (before its first tensor op).
/// </summary>
/// <remarks>
/// <para>
/// CPU instruction sets. libtorch runs on the CPU's full instruction set by default (AVX-512 and AVX-512 BF16 where the
/// CPU has them): about 1.5x faster float32 convolutions than AVX2, and fast bfloat16. The library's networks keep their
/// narrow layers off oneDNN's narrow-channel kernels (<see cref="Models.PaddedConv2d"/>), and the fault census
/// (docs/engineering/fault-census.md: every convolution, linear and GroupNorm shape of every network, forward and
/// backward, compared with float64, in many processes, with and without a competing load) found no wrong, non-finite or
/// process-dependent result at the full instruction set.
/// </para>
/// <para>
/// Set <c>MLNET_DIFFUSION_CPU_ISA=AVX2</c> to limit libtorch to AVX2: this then sets, in the process environment and only
/// where not set already, <c>DNNL_MAX_CPU_ISA=AVX2</c> (oneDNN), <c>ATEN_CPU_CAPABILITY=avx2</c> (libtorch's own
/// kernels) and <c>MKL_ENABLE_INSTRUCTIONS=AVX2</c> (MKL). Kernels of one instruction set sum in one order, so the limit
/// makes float32 results equal between AVX2 and AVX-512 machines; it has no fast bfloat16 kernels. Setting
/// <c>DNNL_MAX_CPU_ISA</c> yourself always wins.
/// </para>
/// </remarks>
public static class TorchRuntime
{
    private static int _initialized;

    /// <summary>The instruction-set limit applied by this library (<c>"AVX2"</c> when <c>MLNET_DIFFUSION_CPU_ISA=AVX2</c> asks for
    /// it), or null when none was applied (the default).</summary>
    public static string? AppliedOneDnnIsaLimit { get; private set; }

#pragma warning disable CA2255 // The settings must precede the first tensor op, which may come from any entry point of the library.
    [ModuleInitializer]
    internal static void OnLoad() => EnsureInitialized();
#pragma warning restore CA2255

    /// <summary>Whether this library raised glibc's mmap and trim thresholds (see <see cref="EnsureInitialized"/>).</summary>
    public static bool AllocatorTuned { get; private set; }

    /// <summary>
    /// Applies the settings once; call it before any TorchSharp use if TorchSharp runs before this library loads.
    /// </summary>
    /// <remarks>
    /// Besides the optional instruction-set limit (see the type's remarks), on Linux with glibc this raises malloc's mmap threshold to
    /// its largest value (32 MiB) and its trim threshold to 2 GiB, unless <c>GLIBC_TUNABLES</c>,
    /// <c>MALLOC_MMAP_THRESHOLD_</c> or <c>MALLOC_TRIM_THRESHOLD_</c> is set, or <c>MLNET_DIFFUSION_MALLOC=default</c>.
    /// libtorch allocates every activation afresh; with glibc's defaults each one of a few MB is a new mmap, and its
    /// pages fault in again on every layer of every step. Kept on the heap, the same memory is reused: a training step of the
    /// 28x28 U-Net at batch 64 runs about 1.6x faster on 2 cores (see README, Benchmarks); forward passes alone gain less. The cost is that the process keeps its
    /// peak heap instead of returning it to the system between steps.
    /// </remarks>
    public static void EnsureInitialized()
    {
        if (Interlocked.Exchange(ref _initialized, 1) == 1) return;
        if (!OperatingSystem.IsLinux()) return;
        TryKeepFreedMemory();
        if (RuntimeInformation.ProcessArchitecture == Architecture.X64) TryLimitOneDnnIsa();
    }

    private static int _nativeChecked;

    /// <summary>
    /// Loads TorchSharp's native backend and, where it cannot load, throws an exception that says why and what to do.
    /// </summary>
    /// <remarks>
    /// TorchSharp reports every native load failure as "doesn't contain a reference to libtorch-cpu-..." even when the
    /// package is referenced. On Debian 12 the usual cause is that TorchSharp 0.107's <c>libLibTorchSharp.so</c> asks for
    /// <c>GLIBCXX_3.4.32</c>, which the system's libstdc++ lacks. This package's build targets (buildTransitive) patch the copy in
    /// the app's output after Build and Publish; an output that skipped them (copied from elsewhere, built with
    /// <c>MLNetDiffusionPatchLibTorchSharp=false</c>) fails here with that explanation.
    /// </remarks>
    /// <exception cref="InvalidOperationException">The native backend cannot be loaded; the message names the cause.</exception>
    public static void EnsureNativeBackend()
    {
        if (Volatile.Read(ref _nativeChecked) == 1) return;
        EnsureInitialized();
        try
        {
            TorchSharp.torch.InitializeDeviceType(TorchSharp.DeviceType.CPU);
        }
        catch (Exception e) when (e is TypeInitializationException or NotSupportedException or DllNotFoundException)
        {
            throw new InvalidOperationException(DescribeNativeLoadFailure(e), e);
        }
        NnpackDisabled = TryDisableNnpack();
        Volatile.Write(ref _nativeChecked, 1);
    }

    /// <summary>Whether this library turned off libtorch's NNPACK convolutions (see <see cref="EnsureNativeBackend"/>).</summary>
    public static bool NnpackDisabled { get; private set; }

    /// <summary>
    /// Turns off libtorch's NNPACK convolution path, as PyTorch's <c>torch.backends.nnpack.set_flags(False)</c> does.
    /// libtorch asks NNPACK for every CPU convolution that oneDNN does not take (batch below 16 with 1x1 kernels, single
    /// threaded), and on CPUs that NNPACK does not support it logs "Could not initialize NNPACK! Reason: Unsupported
    /// hardware" at each such call: thousands of lines for one image generated a row at a time. NNPACK would only run
    /// convolutions at batch 16 or more that oneDNN declines, which this library's networks do not have. TorchSharp has no
    /// binding for the flag, so this calls libtorch's exported <c>at::globalContext().setUserEnabledNNPACK(false)</c>.
    /// Set <c>MLNET_DIFFUSION_NNPACK=default</c> to leave it on.
    /// </summary>
    private static unsafe bool TryDisableNnpack()
    {
        if (!OperatingSystem.IsLinux() ||
            string.Equals(Environment.GetEnvironmentVariable("MLNET_DIFFUSION_NNPACK"), "default", StringComparison.OrdinalIgnoreCase))
            return false;
        // libtorch_cpu is loaded by now (TorchSharp's initialisation); dlopen by its soname returns that copy.
        if (!NativeLibrary.TryLoad("libtorch_cpu.so", out var torchCpu)) return false;
        if (!NativeLibrary.TryGetExport(torchCpu, "_ZN2at13globalContextEv", out var globalContext) ||
            !NativeLibrary.TryGetExport(torchCpu, "_ZN2at7Context20setUserEnabledNNPACKEb", out var setEnabled) ||
            !NativeLibrary.TryGetExport(torchCpu, "_ZNK2at7Context17userEnabledNNPACKEv", out var getEnabled))
            return false;
        nint context = ((delegate* unmanaged<nint>)globalContext)();
        ((delegate* unmanaged<nint, byte, void>)setEnabled)(context, 0);
        return ((delegate* unmanaged<nint, byte>)getEnabled)(context) == 0;
    }

    private static string DescribeNativeLoadFailure(Exception e)
    {
        string first = (e.InnerException ?? e).Message;
        if (!OperatingSystem.IsLinux())
            return $"TorchSharp's native backend could not be loaded: {first} Reference TorchSharp-cpu (or TorchSharp-cuda-*) in the app.";
        var candidates = new[] { AppContext.BaseDirectory, Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native") }
            .Select(d => Path.Combine(d, "libLibTorchSharp.so")).Where(File.Exists).ToList();
        if (candidates.Count == 0)
            return "TorchSharp's native library libLibTorchSharp.so is not in the app's output folder " +
                   $"({AppContext.BaseDirectory}): add a PackageReference to TorchSharp-cpu (or TorchSharp-cuda-linux). TorchSharp said: {first}";
        string path = candidates[0];
        string? loadError = null;
        try { NativeLibrary.Free(NativeLibrary.Load(path)); }
        catch (DllNotFoundException load) { loadError = load.Message; }
        if (loadError is not null && loadError.Contains("GLIBCXX_", StringComparison.Ordinal))
            return $"'{path}' needs a newer libstdc++ than this system has (Debian 12 has GLIBCXX_3.4.30; TorchSharp 0.107 asks for " +
                   "GLIBCXX_3.4.32, whose only symbol is never called). The Microsoft.ML.Diffusion package patches that copy after " +
                   "'dotnet build' and 'dotnet publish' (its buildTransitive targets); this copy was not patched. Rebuild the app with " +
                   $"the package referenced and without -p:MLNetDiffusionPatchLibTorchSharp=false. Loader error: {loadError}";
        return loadError is null
            ? $"TorchSharp's native backend could not be loaded though '{path}' loads: {first}"
            : $"TorchSharp's native library '{path}' could not be loaded: {loadError}";
    }

    private static void TryLimitOneDnnIsa()
    {
        try
        {
            if (!string.Equals(Environment.GetEnvironmentVariable("MLNET_DIFFUSION_CPU_ISA"), "AVX2", StringComparison.OrdinalIgnoreCase)) return;
            if (Environment.GetEnvironmentVariable("DNNL_MAX_CPU_ISA") is not null ||
                Environment.GetEnvironmentVariable("ONEDNN_MAX_CPU_ISA") is not null) return;
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

    private static void TryKeepFreedMemory()
    {
        const int M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3;
        if (string.Equals(Environment.GetEnvironmentVariable("MLNET_DIFFUSION_MALLOC"), "default", StringComparison.OrdinalIgnoreCase) ||
            Environment.GetEnvironmentVariable("GLIBC_TUNABLES") is not null ||
            Environment.GetEnvironmentVariable("MALLOC_MMAP_THRESHOLD_") is not null ||
            Environment.GetEnvironmentVariable("MALLOC_TRIM_THRESHOLD_") is not null) return;
        try
        {
            // mallopt returns 1 on success; 32 MiB is glibc's largest mmap threshold on 64-bit (HEAP_MAX_SIZE / 2).
            AllocatorTuned = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 & mallopt(M_TRIM_THRESHOLD, int.MaxValue) == 1;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // Not glibc (e.g. musl has no mallopt): keep the allocator as it is.
        }
    }

    [DllImport("libc")]
    private static extern int mallopt(int param, int value);

    [DllImport("libc", SetLastError = true)]
    private static extern int setenv(string name, string value, int overwrite);
}
