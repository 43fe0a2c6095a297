using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML.Diffusion.Tests.Persistence;

namespace Microsoft.ML.Diffusion.Tests.Runtime;

/// <summary>
/// TorchRuntime's process-wide settings, which apply when the library loads: checked in child processes of the samples app
/// (its tiny <c>bench</c> reports the limit the library applied).
/// </summary>
[TestClass]
public class TorchRuntimeTests
{
    private static string? AppliedLimit(string? cpuIsa, string json)
    {
        var psi = new ProcessStartInfo("dotnet",
            $"\"{SamplesApp.Path()}\" bench --no-pytorch --batch-size 2 --iterations 1 --runs 1 --json \"{json}\"")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        // The child must decide on its own: none of the variables the setting reads or writes is inherited.
        foreach (var name in new[] { "MLNET_DIFFUSION_CPU_ISA", "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS" })
            psi.Environment.Remove(name);
        if (cpuIsa is not null) psi.Environment["MLNET_DIFFUSION_CPU_ISA"] = cpuIsa;
        using var child = Process.Start(psi)!;
        string stdout = child.StandardOutput.ReadToEnd(), stderr = child.StandardError.ReadToEnd();
        Assert.IsTrue(child.WaitForExit(300_000), "the child process hung");
        Assert.AreEqual(0, child.ExitCode, stdout + stderr);
        var limit = JsonNode.Parse(File.ReadAllText(json))!["torchsharp_isa_limit_applied"]!.GetValue<string>();
        return limit == "none" ? null : limit;
    }

    [TestMethod]
    public void TheFullInstructionSetIsTheDefaultAndAvx2IsOptIn()
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
