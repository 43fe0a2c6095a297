using System.CommandLine;
using Microsoft.ML.Diffusion.Samples.Cli;
using Microsoft.ML.Diffusion.Samples.Metrics;
using Spectre.Console;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary><c>plot</c>: draws the learning curve of a metrics CSV written by <c>train --metrics</c> (<see cref="LearningCurvePlot"/>).</summary>
public static class PlotCommand
{
    /// <summary>What <c>--metrics</c> expects.</summary>
    public const string MetricsFile = "a metrics CSV written by train --metrics";

    public static Command Create()
    {
        var metrics = new Option<string>("--metrics") { Description = "Metrics CSV written by train (--metrics, or <checkpoint-dir>/metrics.csv)", Required = true };
        var output = new Option<string>("--out") { Description = "PNG to write", DefaultValueFactory = _ => "learning-curve.png" };
        var width = new Option<int>("--width") { Description = "Picture width in pixels", DefaultValueFactory = _ => 1200 }.AtLeast(100);
        var height = new Option<int>("--height") { Description = "Picture height in pixels", DefaultValueFactory = _ => 600 }.AtLeast(100);
        var smoothing = new Option<int>("--smooth") { Description = "Steps in the loss's moving average", DefaultValueFactory = _ => 100 }.AtLeast(1);
        var logX = new Option<bool>("--log-x") { Description = "Optimizer steps on a log scale" };
        var logY = new Option<bool>("--log-y") { Description = "Loss and distance on log scales" };
        var title = new Option<string?>("--title") { Description = "Title of the plot" };
        var command = new Command("plot", "Draw the learning curve (loss per step, Frechet distance per evaluation) of a metrics CSV written by train")
            { metrics, output, width, height, smoothing, logX, logY, title };
        command.SetAction(parse => Run(parse.GetValue(metrics)!, parse.GetValue(output)!, new LearningCurvePlot.Settings(
            parse.GetValue(width), parse.GetValue(height), parse.GetValue(smoothing), parse.GetValue(logX), parse.GetValue(logY), parse.GetValue(title))));
        return command;
    }

    public static int Run(string metricsPath, string outPath, LearningCurvePlot.Settings settings)
    {
        var rows = Read(metricsPath);
        Save(rows, metricsPath, outPath, settings);
        int steps = rows.Count(r => r.Kind == MetricsRow.StepKind), evals = rows.Count(r => r.Kind == MetricsRow.EvalKind);
        AnsiConsole.MarkupLine($"Plotted {steps:N0} steps and {evals} evaluation(s); wrote [bold]{Markup.Escape(outPath)}[/].");
        return 0;
    }

    /// <summary>The rows of <paramref name="path"/>; a missing or garbled file is a <see cref="CliException"/> naming it.</summary>
    public static List<MetricsRow> Read(string path)
    {
        InputFiles.RequireFile(path, "--metrics", MetricsFile);
        try
        {
            return MetricsRow.ReadAll(path);
        }
        catch (FormatException e)
        {
            throw new CliException($"--metrics '{path}' is not a metrics file ({e.Message}); expected {MetricsFile}.", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw InputFiles.Bad("--metrics", path, MetricsFile, e);
        }
    }

    /// <summary>Draws <paramref name="rows"/> to <paramref name="outPath"/>; failures are <see cref="CliException"/>s naming the file.</summary>
    public static void Save(IReadOnlyList<MetricsRow> rows, string metricsPath, string outPath, LearningCurvePlot.Settings settings)
    {
        try
        {
            string? dir = Path.GetDirectoryName(Path.GetFullPath(outPath));
            if (dir != null) Directory.CreateDirectory(dir);
            LearningCurvePlot.Save(rows, outPath, settings);
        }
        catch (ArgumentException e) when (e.ParamName == "rows")
        {
            throw new CliException($"--metrics '{metricsPath}' has nothing to plot ({e.Message.Split(" (Parameter")[0]}); expected {MetricsFile}.", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
        {
            throw new CliException($"--out '{outPath}' cannot be written ({CliErrors.OneLine(e.Message).TrimEnd('.')}); expected a writable .png path.", e);
        }
    }
}
