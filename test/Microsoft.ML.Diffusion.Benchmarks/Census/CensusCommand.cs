using System.Diagnostics;
using System.Text.Json;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Benchmarks.Census;

/// <summary>
/// The fault census of libtorch's CPU kernels: every convolution, linear and normalisation shape that the library's
/// networks run, forward and backward, many times, in several processes per instruction-set level, with and without a
/// competing CPU load, each result compared with float64. Usage:
/// <code>
/// dotnet run -c Release --project test/Microsoft.ML.Diffusion.Benchmarks -- census run [--levels AVX2,ALL] [--dtypes fp32,bf16]
///     [--calls 200] [--processes 2] [--loads none,busy] [--max-seconds 60] [--match TEXT] [--out DIR]
/// dotnet run ... -- census shapes      (the shapes, found by hooking one training step of every network)
/// </code>
/// Each (level, dtype, load, process) runs in a child process, because oneDNN reads <c>DNNL_MAX_CPU_ISA</c> once.
/// </summary>
internal static class CensusCommand
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>Runs the verb after "census".</summary>
    public static int Run(string[] args)
    {
        string verb = args.FirstOrDefault() ?? "run";
        var options = Options.Parse(args.Skip(1).ToArray());
        switch (verb)
        {
            case "shapes":
                var shapes = CensusNetworks.CollectShapes();
                foreach (var s in shapes) Console.WriteLine($"{s.Label,-60} {string.Join("; ", s.Networks)}");
                Console.WriteLine($"{shapes.Count} shapes.");
                return 0;
            case "probe":
                return Probe(options);
            case "busy":
                Busy();
                return 0;
            case "run":
                return Orchestrate(options);
            default:
                Console.Error.WriteLine($"census: unknown verb '{verb}'; expected run, shapes, probe or busy.");
                return 1;
        }
    }

    /// <summary>The parent: shapes once, then one child per (level, dtype, load, process); aggregates and writes the report.</summary>
    private static int Orchestrate(Options o)
    {
        Directory.CreateDirectory(o.Out);
        var shapes = CensusNetworks.CollectShapes().Where(s => o.Match is null || s.Label.Contains(o.Match, StringComparison.OrdinalIgnoreCase)).ToList();
        string shapesPath = Path.Combine(o.Out, "shapes.json");
        if (File.Exists(shapesPath)) shapes = JsonSerializer.Deserialize<List<LayerShape>>(File.ReadAllText(shapesPath))!;   // resuming
        else File.WriteAllText(shapesPath, JsonSerializer.Serialize(shapes, Json));
        Console.WriteLine($"{shapes.Count} shapes; levels {string.Join(",", o.Levels)}; dtypes {string.Join(",", o.DTypes)}; " +
                          $"loads {string.Join(",", o.Loads)}; {o.Processes} processes x {o.Calls} calls per shape and route.");
        var runs = new List<CensusRun>();
        // Every process probes the same inputs (one seed), so that their first results can be compared bit for bit.
        foreach (string level in o.Levels)
            foreach (string dtype in o.DTypes)
                foreach (string load in o.Loads)
                    for (int p = 0; p < o.Processes; p++)
                    {
                        string outPath = Path.Combine(o.Out, $"probe-{level}-{dtype}-{load}-{p}.json");
                        if (File.Exists(outPath))
                        {
                            // A census outlives a session: a rerun with the same --out keeps the processes that finished.
                            runs.Add(new CensusRun(level, dtype, load, p, 0, JsonSerializer.Deserialize<List<ProbeResult>>(File.ReadAllText(outPath))!));
                            Console.WriteLine($"{level,-18} {dtype,-5} load {load,-4} process {p}: kept from an earlier run");
                            continue;
                        }
                        var watch = Stopwatch.StartNew();
                        using var busy = load == "busy" ? StartChild(new[] { "census", "busy" }, level) : null;
                        int code;
                        using (var child = StartChild(new[] { "census", "probe", "--shapes", shapesPath, "--dtype", dtype, "--calls", o.Calls.ToString(),
                                   "--max-seconds", o.MaxSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture), "--seed", o.Seed.ToString(), "--out", outPath }, level))
                        {
                            child.WaitForExit();
                            code = child.ExitCode;
                        }
                        if (busy is { HasExited: false }) busy.Kill();
                        var results = code == 0 && File.Exists(outPath) ? JsonSerializer.Deserialize<List<ProbeResult>>(File.ReadAllText(outPath))! : new();
                        runs.Add(new CensusRun(level, dtype, load, p, code, results));
                        WriteReport(o, shapes, runs);     // after every process: a long census can be read while it runs
                        Console.WriteLine($"{level,-18} {dtype,-5} load {load,-4} process {p}: exit {code}, {results.Sum(r => r.Calls)} calls, " +
                                          $"{results.Sum(r => r.NonFinite + r.Wrong)} faults, {results.Sum(r => r.Nondeterministic)} nondeterministic, {watch.Elapsed.TotalSeconds:F0} s");
                    }
        Console.WriteLine(WriteReport(o, shapes, runs));
        return 0;
    }

    private static string WriteReport(Options o, List<LayerShape> shapes, List<CensusRun> runs)
    {
        File.WriteAllText(Path.Combine(o.Out, "census.json"), JsonSerializer.Serialize(runs, Json));
        string report = CensusReport.Markdown(shapes, runs, o);
        File.WriteAllText(Path.Combine(o.Out, "census.md"), report);
        return report;
    }

    /// <summary>A child: every shape and route of the shapes file, in this process's instruction-set level.</summary>
    private static int Probe(Options o)
    {
        var shapes = JsonSerializer.Deserialize<List<LayerShape>>(File.ReadAllText(o.Shapes!))!;
        var dtype = o.DTypes[0] == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32;
        var results = new List<ProbeResult>();
        foreach (var shape in shapes)
            foreach (var route in CensusProbe.Routes(shape))
                results.Add(CensusProbe.Run(shape, route, dtype, o.Calls, o.MaxSeconds, o.Seed));
        string temp = o.Out + ".tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(results, Json));
        File.Move(temp, o.Out, overwrite: true);
        return 0;
    }

    /// <summary>A competing CPU load: one spinning thread per core until killed.</summary>
    private static void Busy()
    {
        var threads = Enumerable.Range(0, Environment.ProcessorCount).Select(_ => new Thread(() =>
        {
            double x = 1;
            while (true) x = Math.Sqrt(x * x + 1e-9) * 0.999999 + 1e-6;
        }) { IsBackground = false }).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
    }

    /// <summary>Starts this program again with <paramref name="args"/> under an instruction-set level.</summary>
    private static Process StartChild(string[] args, string level)
    {
        var info = new ProcessStartInfo(Environment.ProcessPath!) { UseShellExecute = false };
        string self = typeof(CensusCommand).Assembly.Location;
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet") info.ArgumentList.Add(self);
        foreach (string a in args) info.ArgumentList.Add(a);
        foreach (var (name, value) in LevelEnvironment(level)) info.Environment[name] = value;
        return Process.Start(info)!;
    }

    /// <summary>
    /// The environment of a level. AVX2 is the library's clamp (oneDNN, ATen and MKL all at AVX2); the other levels set oneDNN's
    /// limit only (which also stops the library's clamp) and leave ATen and MKL at their full instruction sets.
    /// </summary>
    public static IEnumerable<(string, string)> LevelEnvironment(string level)
    {
        yield return ("DNNL_MAX_CPU_ISA", level);
        if (level == "AVX2")
        {
            yield return ("ATEN_CPU_CAPABILITY", "avx2");
            yield return ("MKL_ENABLE_INSTRUCTIONS", "AVX2");
        }
    }

    /// <summary>The census's options.</summary>
    internal sealed class Options
    {
        public string[] Levels { get; private set; } = { "AVX2", "AVX512_CORE", "AVX512_CORE_BF16", "ALL" };
        public string[] DTypes { get; private set; } = { "fp32", "bf16" };
        public string[] Loads { get; private set; } = { "none", "busy" };
        public int Calls { get; private set; } = 200;
        public int Processes { get; private set; } = 2;
        public double MaxSeconds { get; private set; } = 60;
        public int Seed { get; private set; } = 1;
        public string? Match { get; private set; }
        public string? Shapes { get; private set; }
        public string Out { get; private set; } = "census";

        public static Options Parse(string[] args)
        {
            var o = new Options();
            for (int i = 0; i < args.Length; i++)
            {
                string value = i + 1 < args.Length ? args[i + 1] : throw new ArgumentException($"census: {args[i]} needs a value.");
                switch (args[i])
                {
                    case "--levels": o.Levels = value.Split(','); break;
                    case "--dtypes": case "--dtype": o.DTypes = value.Split(','); break;
                    case "--loads": o.Loads = value.Split(','); break;
                    case "--calls": o.Calls = int.Parse(value); break;
                    case "--processes": o.Processes = int.Parse(value); break;
                    case "--max-seconds": o.MaxSeconds = double.Parse(value, System.Globalization.CultureInfo.InvariantCulture); break;
                    case "--seed": o.Seed = int.Parse(value); break;
                    case "--match": o.Match = value; break;
                    case "--shapes": o.Shapes = value; break;
                    case "--out": o.Out = value; break;
                    default: throw new ArgumentException($"census: unknown option {args[i]}.");
                }
                i++;
            }
            if (o.DTypes.Any(d => d is not ("fp32" or "bf16"))) throw new ArgumentException($"census: --dtypes takes fp32 and bf16; got {string.Join(",", o.DTypes)}.");
            if (o.Loads.Any(l => l is not ("none" or "busy"))) throw new ArgumentException($"census: --loads takes none and busy; got {string.Join(",", o.Loads)}.");
            return o;
        }
    }
}

/// <summary>The results of one child process.</summary>
public sealed record CensusRun(string Level, string DType, string Load, int Process, int ExitCode, List<ProbeResult> Results);
