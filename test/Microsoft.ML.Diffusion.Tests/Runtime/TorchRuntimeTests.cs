using System.Runtime.InteropServices;

namespace Microsoft.ML.Diffusion.Tests.Runtime;

[TestClass]
public sealed class TorchRuntimeTests
{
    /// <summary>libtorch's NNPACK path is off once the backend is loaded (it logs a line per convolution on unsupported CPUs).</summary>
    [TestMethod]
    public unsafe void NnpackIsOffAfterTheBackendLoads()
    {
        if (!OperatingSystem.IsLinux()) Assert.Inconclusive("the NNPACK switch is applied on Linux only");
        TorchRuntime.EnsureNativeBackend();
        Assert.IsTrue(TorchRuntime.NnpackDisabled);

        // Read the flag back through libtorch itself, independently of the library's own check.
        Assert.IsTrue(NativeLibrary.TryLoad("libtorch_cpu.so", out var lib));
        var globalContext = (delegate* unmanaged<nint>)NativeLibrary.GetExport(lib, "_ZN2at13globalContextEv");
        var userEnabledNnpack = (delegate* unmanaged<nint, byte>)NativeLibrary.GetExport(lib, "_ZNK2at7Context17userEnabledNNPACKEv");
        Assert.AreEqual(0, userEnabledNnpack(globalContext()));
    }
}
