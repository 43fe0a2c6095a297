using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Diffusion.Samples.Bench;

/// <summary>
/// Drives <c>pytorch_unet_bench.py</c> (shipped next to the samples) in a child Python process that stays warm: each
/// <see cref="Measure"/> asks it for one round of the same figures as <see cref="TorchSharpBench.Measure"/>, so the two
/// sides can alternate.
/// </summary>
public sealed class PyTorchReference : IDisposable
{
    private readonly Process _process;

    private PyTorchReference(Process process, JsonObject info)
    {
        _process = process;
        Info = info;
    }

    /// <summary>What the script reports about itself: torch version, parameter count, threads, CPU capability, oneDNN ISA, BLAS.</summary>
    public JsonObject Info { get; }

    /// <summary>The script's path next to the executable.</summary>
    public static string ScriptPath => Path.Combine(AppContext.BaseDirectory, "Bench", "pytorch_unet_bench.py");

    /// <summary>Whether <paramref name="python"/> exists and imports torch; <paramref name="why"/> says why not.</summary>
    public static bool IsAvailable(string python, out string why)
    {
        why = "";
        if (!File.Exists(python)) { why = $"{python} was not found"; return false; }
        if (!File.Exists(ScriptPath)) { why = $"{ScriptPath} was not found"; return false; }
        try
        {
            using var p = Process.Start(new ProcessStartInfo(python, "-c \"import torch\"") { RedirectStandardError = true, UseShellExecute = false })!;
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0) why = $"{python} cannot import torch (apt-get install python3-torch libopenblas0-openmp)";
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            why = e.Message;
            return false;
        }
    }

    /// <summary>Starts the script with the batch, thread count and iterations of the TorchSharp side.</summary>
    public static PyTorchReference Start(string python, int batchSize, int threads, int iterations)
    {
        var psi = new ProcessStartInfo(python)
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = false, UseShellExecute = false,
        };
        foreach (var a in new[] { ScriptPath, "--batch-size", batchSize.ToString(), "--threads", threads.ToString(), "--iterations", iterations.ToString() })
            psi.ArgumentList.Add(a);
        // The child must not inherit the ISA limits this process set for libtorch 2.10 (see TorchRuntime): PyTorch runs with its own defaults.
        foreach (var name in new[] { "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS" })
            if (TorchRuntime.AppliedOneDnnIsaLimit is not null) psi.Environment.Remove(name);
        var process = Process.Start(psi) ?? throw new InvalidOperationException($"Could not start {python}.");
        string? first = process.StandardOutput.ReadLine();
        if (first is null) throw new InvalidOperationException($"{ScriptPath} ended before reporting (exit code {(process.WaitForExit(5000) ? process.ExitCode : -1)}).");
        return new PyTorchReference(process, (JsonObject)JsonNode.Parse(first)!);
    }

    /// <summary>One round of measurements by PyTorch.</summary>
    public Dictionary<string, double> Measure()
    {
        _process.StandardInput.WriteLine("run");
        _process.StandardInput.Flush();
        string line = _process.StandardOutput.ReadLine() ?? throw new InvalidOperationException("The PyTorch script ended unexpectedly.");
        var node = (JsonObject)JsonNode.Parse(line)!;
        return node.ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<double>());
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.StandardInput.WriteLine("quit");
                _process.StandardInput.Flush();
                if (!_process.WaitForExit(10000)) _process.Kill();
            }
        }
        catch (IOException) { }
        _process.Dispose();
    }
}
