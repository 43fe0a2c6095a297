using System.Text;

namespace Microsoft.ML.Diffusion.Benchmarks.Census;

/// <summary>The census as markdown: a summary per level, dtype and load, then per shape and route the fault rate per level.</summary>
internal static class CensusReport
{
    /// <summary>How many (shape, route) pairs gave different first-call bits in different processes of a level and dtype
    /// (all loads), of how many seen in two or more processes.</summary>
    private static string AcrossProcesses(List<CensusRun> runs, string level, string dtype)
    {
        var byShape = runs.Where(r => r.Level == level && r.DType == dtype).SelectMany(r => r.Results)
            .Where(r => r.FirstHash.Length > 0).GroupBy(r => (r.Key, r.Route)).Where(g => g.Count() > 1).ToList();
        return $"{byShape.Count(g => g.Select(r => r.FirstHash).Distinct().Count() > 1)} of {byShape.Count}";
    }

    public static string Markdown(List<LayerShape> shapes, List<CensusRun> runs, CensusCommand.Options o)
    {
        var md = new StringBuilder();
        md.AppendLine($"Census: {shapes.Count} layer shapes, {o.Processes} processes x up to {o.Calls} calls per shape and route " +
                      $"(at most {o.MaxSeconds} s each), loads {string.Join(", ", o.Loads)}; {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, " +
                      $"{Environment.ProcessorCount} cores. A fault is a non-finite result or a relative error above the tolerance " +
                      "(fp32 1e-3, bf16 5e-2) against float64; nondeterministic counts calls whose bits differ from the process's first call.");
        md.AppendLine();
        md.AppendLine("| level | dtype | load | processes (failed) | calls | non-finite | wrong | nondeterministic | max error (correct calls) | shapes whose bits differ between processes |");
        md.AppendLine("|---|---|---|---|---|---|---|---|---|---|");
        foreach (var g in runs.GroupBy(r => (r.Level, r.DType, r.Load)))
        {
            var results = g.SelectMany(r => r.Results).ToList();
            md.AppendLine($"| {g.Key.Level} | {g.Key.DType} | {g.Key.Load} | {g.Count()} ({g.Count(r => r.ExitCode != 0)}) | {results.Sum(r => r.Calls)} | " +
                          $"{results.Sum(r => r.NonFinite)} | {results.Sum(r => r.Wrong)} | {results.Sum(r => r.Nondeterministic)} | " +
                          $"{(results.Count == 0 ? 0 : results.Max(r => r.MaxError)):G2} | {AcrossProcesses(runs, g.Key.Level, g.Key.DType)} |");
        }
        foreach (string dtype in o.DTypes)
        {
            md.AppendLine();
            md.AppendLine($"### {dtype}: faults / calls (nondeterministic) per shape, route and level, all loads");
            md.AppendLine();
            md.AppendLine("| shape | route | " + string.Join(" | ", o.Levels) + " | networks |");
            md.AppendLine("|---|---|" + string.Concat(o.Levels.Select(_ => "---|")) + "---|");
            foreach (var shape in shapes)
                foreach (var route in CensusProbe.Routes(shape))
                {
                    var cells = o.Levels.Select(level =>
                    {
                        var r = runs.Where(x => x.Level == level && x.DType == dtype).SelectMany(x => x.Results)
                            .Where(x => x.Key == shape.Key && x.Route == route).ToList();
                        if (r.Count == 0) return "-";
                        int faults = r.Sum(x => x.NonFinite + x.Wrong);
                        string cell = $"{faults}/{r.Sum(x => x.Calls)} ({r.Sum(x => x.Nondeterministic)})";
                        return faults > 0 ? $"**{cell}**" : cell;
                    });
                    md.AppendLine($"| {shape.Label} | {route} | {string.Join(" | ", cells)} | {string.Join("; ", shape.Networks)} |");
                }
        }
        return md.ToString();
    }
}
