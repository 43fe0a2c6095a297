using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Diffusion.Samples.Bench;
using Spectre.Console;
using TorchSharp;
using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>bench</c>: throughput of the 28x28 U-Net (the Core configuration) at batch 64 (training step and one denoising
/// step, fp32 and bf16 mixed precision), the U-Net's FLOP rate against libtorch's dense limits, and, when
/// <c>/usr/bin/python3</c> imports torch, the same figures from PyTorch (pytorch_unet_bench.py, same network, batch and
/// threads) in alternating rounds, reported as ratios TorchSharp / PyTorch of the medians. The denoising step is also timed on
/// ONNX Runtime (<c>step_img_per_s.onnxruntime</c>), at batch 1 on all three engines (<c>step_b1_img_per_s</c>), and the demo's
/// 64-image grid on each engine (<c>demo_grid_seconds</c>).
/// </summary>
public static class BenchCommand
{
    private static readonly string[] Throughputs = { "train_img_per_s", "train_bf16_img_per_s", "step_img_per_s", "step_bf16_img_per_s", "step_b1_img_per_s" };

    /// <summary>The suffix of a figure measured on ONNX Runtime (<c>step_img_per_s.onnxruntime</c>).</summary>
    private const string OnnxSuffix = ".onnxruntime";

    /// <summary>Round keys of the demo grid's seconds per engine.</summary>
    private const string DemoTorch = "demo_grid_seconds.torchsharp", DemoOnnx = "demo_grid_seconds.onnxruntime";
    private static readonly string[] Limits = { "matmul_gflops_per_s", "conv_gflops_per_s", "matmul_bf16_gflops_per_s" };

    public static Command Create()
    {
        var batch = new Option<int>("--batch-size") { Description = "Images per step", DefaultValueFactory = _ => 64 }.AtLeast(1);
        var iterations = new Option<int>("--iterations") { Description = "Timed calls per figure and round", DefaultValueFactory = _ => 5 }.AtLeast(1);
        var rounds = new Option<int>("--runs") { Description = "Rounds; TorchSharp and PyTorch alternate, the median is reported", DefaultValueFactory = _ => 3 }.AtLeast(1);
        var threads = new Option<int>("--threads") { Description = "Threads of libtorch and of PyTorch", DefaultValueFactory = _ => 2 }.AtLeast(1);
        var python = new Option<string>("--python") { Description = "Python with torch for the reference", DefaultValueFactory = _ => "/usr/bin/python3" };
        var noPython = new Option<bool>("--no-pytorch") { Description = "Skip the PyTorch reference" };
        var json = new Option<string?>("--json") { Description = "Also write the figures to this JSON file" };
        var noDemo = new Option<bool>("--no-demo") { Description = "Skip the demo grid's wall time per engine (demo_grid_seconds)" };
        var isa = new Option<string?>(OneDnnIsaOption)
        {
            Description = "Set DNNL_MAX_CPU_ISA for this run (e.g. ALL: oneDNN's AVX-512 and bfloat16 kernels); default: the library's choice (the full instruction set unless MLNET_DIFFUSION_CPU_ISA=AVX2, see TorchRuntime)",
        };
        var command = new Command("bench", "Measure the 28x28 U-Net's training and sampling throughput (fp32, bf16), side by side with PyTorch")
            { batch, iterations, rounds, threads, python, noPython, json, isa, noDemo };
        command.SetAction(parse => Run(parse.GetValue(batch), parse.GetValue(iterations), parse.GetValue(rounds), parse.GetValue(threads),
            parse.GetValue(noPython) ? null : parse.GetValue(python), parse.GetValue(json), parse.GetValue(Cli.CliErrors.Verbose), !parse.GetValue(noDemo)));
        return command;
    }

    private const string OneDnnIsaOption = "--onednn-isa";

    /// <summary>
    /// Applies <c>bench --onednn-isa X</c> before the library loads: oneDNN reads DNNL_MAX_CPU_ISA once, and TorchRuntime
    /// leaves a variable that is already set alone (then it limits neither oneDNN, ATen nor MKL). Call it first in Main.
    /// </summary>
    public static void ApplyOneDnnIsaOption(string[] args)
    {
        if (args.Length == 0 || args[0] != "bench") return;
        int i = Array.IndexOf(args, OneDnnIsaOption);
        if (i < 0 || i + 1 >= args.Length) return;
        if (setenv("DNNL_MAX_CPU_ISA", args[i + 1], 1) == 0) Environment.SetEnvironmentVariable("DNNL_MAX_CPU_ISA", args[i + 1]);
    }

    // .NET's Environment.SetEnvironmentVariable does not reach the native environment on Unix.
    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int setenv(string name, string value, int overwrite);

    public static int Run(int batchSize, int iterations, int rounds, int threads, string? python, string? jsonPath, bool verbose = false, bool demo = true)
    {
        if (batchSize < 1 || iterations < 1 || rounds < 1 || threads < 1)
        {
            throw new CliException($"--batch-size ({batchSize}), --iterations ({iterations}), --runs ({rounds}) and --threads ({threads}) must be >= 1.");
        }
        torch.set_num_threads(threads);
        // With the opt-in AVX2 limit (TorchRuntime, MLNET_DIFFUSION_CPU_ISA=AVX2) oneDNN has no fast bfloat16 kernels: convolutions fall back to
        // generic code that runs more than 10x slower than fp32, so the bf16 figures need --onednn-isa ALL.
        bool bf16 = TorchRuntime.AppliedOneDnnIsaLimit is null;
        if (!bf16)
            AnsiConsole.MarkupLine($"[yellow]bf16 figures skipped: the library limits oneDNN to {TorchRuntime.AppliedOneDnnIsaLimit} on this CPU, which has no fast bfloat16 kernels; run bench {OneDnnIsaOption} ALL for them.[/]");
        using var bench = new TorchSharpBench(batchSize, iterations, bf16);
        double gflop = bench.ForwardFlopsPerImage / 1e9;
        AnsiConsole.MarkupLine($"U-Net: {bench.ParameterCount:N0} parameters, {gflop:F3} GFLOP/image forward; batch {batchSize}, " +
                               $"{torch.get_num_threads()} threads; libtorch ISA limit: {TorchRuntime.AppliedOneDnnIsaLimit ?? "none"}.");

        DemoGridBench? demoGrid = null;
        if (demo)
        {
            demoGrid = DemoGridBench.TryCreate(out string whyNot);
            if (demoGrid is null) AnsiConsole.MarkupLine($"[yellow]No demo grid timing: {Markup.Escape(whyNot)}.[/]");
        }

        PyTorchReference? reference = null;
        if (python is not null)
        {
            if (PyTorchReference.IsAvailable(python, out string why))
            {
                reference = PyTorchReference.Start(python, batchSize, threads, iterations);
                AnsiConsole.MarkupLine($"PyTorch reference: {Markup.Escape(reference.Info.ToJsonString())}");
            }
            else AnsiConsole.MarkupLine($"[yellow]No PyTorch reference: {Markup.Escape(why)}.[/]");
        }

        var ours = new List<Dictionary<string, double>>();
        var theirs = new List<Dictionary<string, double>>();
        var watch = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            ConsoleProgress.Run(ctx =>
            {
                var task = ctx.AddTask("Alternating rounds", maxValue: rounds * (reference is null ? 1 : 2));
                for (int r = 0; r < rounds; r++)
                {
                    ours.Add(bench.Measure(verbose ? (k, v) => Console.Error.WriteLine($"round {r + 1} TorchSharp {k}: {v:F1}") : null));
                    if (demoGrid is not null)
                    {
                        // Alternate the engines' order from round to round.
                        var order = r % 2 == 0 ? new[] { InferenceEngine.TorchSharp, InferenceEngine.OnnxRuntime } : new[] { InferenceEngine.OnnxRuntime, InferenceEngine.TorchSharp };
                        foreach (var engine in order)
                            ours[^1][engine == InferenceEngine.TorchSharp ? DemoTorch : DemoOnnx] = demoGrid.Seconds(engine);
                        if (verbose) Console.Error.WriteLine($"round {r + 1} demo grid: TorchSharp {ours[^1][DemoTorch]:F2} s, ONNX Runtime {ours[^1][DemoOnnx]:F2} s");
                    }
                    task.Increment(1);
                    if (reference is null) continue;
                    theirs.Add(reference.Measure());
                    if (verbose)
                        foreach (var (k, v) in theirs[^1]) Console.Error.WriteLine($"round {r + 1} PyTorch {k}: {v:F1}");
                    task.Increment(1);
                }
                return 0;
            });
        }
        finally
        {
            reference?.Dispose();
            demoGrid?.Dispose();
        }

        var doc = Report(batchSize, threads, rounds, iterations, gflop, ours, theirs, reference?.Info);
        doc["wall_seconds"] = Math.Round(watch.Elapsed.TotalSeconds, 1);
        Print(doc);
        if (jsonPath != null)
        {
            File.WriteAllText(jsonPath, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            AnsiConsole.MarkupLine($"wrote {Markup.Escape(jsonPath)}");
        }
        return 0;
    }

    private static double Median(IEnumerable<double> values)
    {
        var v = values.OrderBy(x => x).ToArray();
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }

    /// <summary>The JSON report: medians per side, ratios, the U-Net's FLOP rate and its fraction of the best fp32 limit.</summary>
    internal static JsonObject Report(int batchSize, int threads, int rounds, int iterations, double gflopPerImage,
        IReadOnlyList<Dictionary<string, double>> ours, IReadOnlyList<Dictionary<string, double>> theirs, JsonObject? pytorchInfo)
    {
        static double R(double x, int digits = 2) => Math.Round(x, digits);
        var doc = new JsonObject
        {
            ["batch_size"] = batchSize,
            ["threads"] = threads,
            ["rounds"] = rounds,
            ["iterations_per_round"] = iterations,
            ["torchsharp_onednn_max_isa"] = Environment.GetEnvironmentVariable("DNNL_MAX_CPU_ISA") ?? "default",
            ["torchsharp_isa_limit_applied"] = TorchRuntime.AppliedOneDnnIsaLimit ?? "none",
        };
        foreach (var key in Throughputs)
        {
            if (!ours[0].ContainsKey(key))
            {
                var skipped = new JsonObject { ["skipped"] = $"oneDNN limited to {TorchRuntime.AppliedOneDnnIsaLimit}: no fast bfloat16 kernels; run with {OneDnnIsaOption} ALL" };
                if (theirs.Count > 0) skipped["pytorch"] = R(Median(theirs.Select(o => o[key])));
                doc[key] = skipped;
                continue;
            }
            double ts = Median(ours.Select(o => o[key]));
            var entry = new JsonObject { ["torchsharp"] = R(ts), ["torchsharp_runs"] = new JsonArray(ours.Select(o => (JsonNode)R(o[key])).ToArray()) };
            if (theirs.Count > 0 && theirs[0].ContainsKey(key))
            {
                double pt = Median(theirs.Select(o => o[key]));
                entry["pytorch"] = R(pt);
                entry["pytorch_runs"] = new JsonArray(theirs.Select(o => (JsonNode)R(o[key])).ToArray());
                entry["ratio"] = R(ts / pt, 3);
            }
            if (ours[0].ContainsKey(key + OnnxSuffix))
            {
                // The same step on ONNX Runtime: its rate, and its speed against TorchSharp and PyTorch in the same rounds.
                double ort = Median(ours.Select(o => o[key + OnnxSuffix]));
                entry["onnxruntime"] = R(ort);
                entry["onnxruntime_runs"] = new JsonArray(ours.Select(o => (JsonNode)R(o[key + OnnxSuffix])).ToArray());
                entry["onnxruntime_vs_torchsharp"] = R(ort / ts, 3);
                if (theirs.Count > 0 && theirs[0].ContainsKey(key)) entry["onnxruntime_vs_pytorch"] = R(ort / Median(theirs.Select(o => o[key])), 3);
                doc[key + OnnxSuffix] = R(ort);
            }
            doc[key] = entry;
        }
        if (ours[0].ContainsKey(DemoTorch))
        {
            double ts = Median(ours.Select(o => o[DemoTorch])), ort = Median(ours.Select(o => o[DemoOnnx]));
            doc["demo_grid_seconds"] = new JsonObject
            {
                ["what"] = "the demo's 64-image grid: bundled model, DPM-Solver++ 20 steps, batch 64",
                ["torchsharp"] = R(ts, 3),
                ["torchsharp_runs"] = new JsonArray(ours.Select(o => (JsonNode)R(o[DemoTorch], 3)).ToArray()),
                ["onnxruntime"] = R(ort, 3),
                ["onnxruntime_runs"] = new JsonArray(ours.Select(o => (JsonNode)R(o[DemoOnnx], 3)).ToArray()),
                ["onnxruntime_speedup"] = R(ts / ort, 3),
            };
        }
        double step = Median(ours.Select(o => o["step_img_per_s"]));
        double train = Median(ours.Select(o => o["train_img_per_s"]));
        doc["unet_gflop_per_img"] = R(gflopPerImage, 4);
        doc["unet_gflops_per_s"] = R(step * gflopPerImage, 1);                   // forward only (the denoising step)
        doc["unet_train_gflops_per_s"] = R(train * 3 * gflopPerImage, 1);        // forward + backward ~ 3x forward
        foreach (var key in Limits)
            if (ours[0].ContainsKey(key)) doc[key] = R(Median(ours.Select(o => o[key])), 1);
        double bestFp32 = Math.Max(doc["matmul_gflops_per_s"]!.GetValue<double>(), doc["conv_gflops_per_s"]!.GetValue<double>());
        doc["unet_fraction_of_fp32_limit"] = R(step * gflopPerImage / bestFp32, 3);
        if (ours[0].ContainsKey("step_bf16_img_per_s"))
        {
            doc["bf16_step_speedup"] = R(Median(ours.Select(o => o["step_bf16_img_per_s"])) / step, 3);
            doc["bf16_train_speedup"] = R(Median(ours.Select(o => o["train_bf16_img_per_s"])) / train, 3);
        }
        if (theirs.Count > 0)
        {
            var pt = new JsonObject();
            foreach (var key in Limits) pt[key] = R(Median(theirs.Select(o => o[key])), 1);
            pt["unet_gflops_per_s"] = R(Median(theirs.Select(o => o["step_img_per_s"])) * gflopPerImage, 1);
            if (pytorchInfo is not null)
                foreach (var kv in pytorchInfo) pt[kv.Key] = kv.Value?.DeepClone();
            doc["pytorch"] = pt;
        }
        return doc;
    }

    private static void Print(JsonObject doc)
    {
        var table = new Table().AddColumns("figure", "TorchSharp", "PyTorch", "ratio", "ONNX Runtime", "ORT / TorchSharp", "ORT / PyTorch");
        foreach (var key in Throughputs)
        {
            var e = doc[key]!.AsObject();
            table.AddRow(key, e["torchsharp"]?.ToString() ?? "skipped", e["pytorch"]?.ToString() ?? "-", e["ratio"]?.ToString() ?? "-",
                e["onnxruntime"]?.ToString() ?? "-", e["onnxruntime_vs_torchsharp"]?.ToString() ?? "-", e["onnxruntime_vs_pytorch"]?.ToString() ?? "-");
        }
        if (doc["demo_grid_seconds"] is JsonObject demo)
            table.AddRow("demo_grid_seconds", demo["torchsharp"]!.ToString(), "-", "-", demo["onnxruntime"]!.ToString(), $"{demo["onnxruntime_speedup"]}x faster", "-");
        var pt = doc["pytorch"]?.AsObject();
        foreach (var key in Limits.Append("unet_gflops_per_s"))
            table.AddRow(key, doc[key]?.ToString() ?? "skipped", pt?[key]?.ToString() ?? "-", "", "", "", "");
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"U-Net fp32 forward: {doc["unet_gflops_per_s"]} GFLOP/s = {doc["unet_fraction_of_fp32_limit"]} of the best fp32 limit" +
                               (doc["bf16_step_speedup"] is null ? "." : $"; bf16 speed-up: step {doc["bf16_step_speedup"]}x, training {doc["bf16_train_speedup"]}x."));
    }
}
