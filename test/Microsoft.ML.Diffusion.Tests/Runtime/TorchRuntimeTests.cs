using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using Microsoft.ML.Diffusion.Tests.Persistence;

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

    /// <summary>The limit the library applied in a child process of the samples app (its tiny bench reports it), with
    /// <c>MLNET_DIFFUSION_CPU_ISA</c> set to <paramref name="cpuIsa"/> and none of the variables the setting reads inherited.</summary>
    private static string? AppliedLimit(string? cpuIsa, string json)
    {
        var psi = new ProcessStartInfo("dotnet",
            $"\"{SamplesApp.Path()}\" bench --no-pytorch --batch-size 2 --iterations 1 --runs 1 --json \"{json}\"")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var name in new[] { "MLNET_DIFFUSION_CPU_ISA", "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS" })
            psi.Environment.Remove(name);
        if (cpuIsa is not null) psi.Environment["MLNET_DIFFUSION_CPU_ISA"] = cpuIsa;
        using var child = Process.Start(psi)!;
        var stderr = child.StandardError.ReadToEndAsync();
        string stdout = child.StandardOutput.ReadToEnd();
        Assert.IsTrue(child.WaitForExit(300_000), "the child process hung");
        Assert.AreEqual(0, child.ExitCode, stdout + stderr.Result);
        var limit = JsonNode.Parse(File.ReadAllText(json))!["torchsharp_isa_limit_applied"]!.GetValue<string>();
        return limit == "none" ? null : limit;
    }

    /// <summary>The full instruction set is the default (the fault census found no fault there); AVX2 is opt-in.</summary>
    [TestMethod]
    public void TheFullInstructionSetIsTheDefault_AndAvx2IsOptIn()
    {
        string dir = TestData.TempDirectory("diffusion-isa");
        try
        {
            Assert.IsNull(AppliedLimit(null, Path.Combine(dir, "default.json")), "no limit by default");
            Assert.AreEqual("AVX2", AppliedLimit("AVX2", Path.Combine(dir, "avx2.json")), "MLNET_DIFFUSION_CPU_ISA=AVX2 applies the limit");
            Assert.IsNull(AppliedLimit("ALL", Path.Combine(dir, "all.json")), "any other value leaves the instruction set alone");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
