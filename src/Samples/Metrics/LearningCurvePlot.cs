using ScottPlot;
using ScottPlot.TickGenerators;

namespace Microsoft.ML.Diffusion.Samples.Metrics;

/// <summary>
/// The learning curve of a metrics file (<see cref="MetricsRow"/>) as a PNG, drawn with ScottPlot: the training loss per step
/// (faint) and its trailing moving average on the left axis, the evaluate command's Frechet distance of each evaluation on the
/// right axis, against the optimizer step (optionally on log scales).
/// </summary>
public static class LearningCurvePlot
{
    /// <summary>How the curve is drawn.</summary>
    /// <param name="Width">Picture width in pixels.</param>
    /// <param name="Height">Picture height in pixels.</param>
    /// <param name="Smoothing">Steps in the loss's trailing moving average (clipped to the number of steps).</param>
    /// <param name="LogX">Optimizer steps on a log10 scale.</param>
    /// <param name="LogY">Loss and distance on log10 scales.</param>
    /// <param name="Title">The title (null: none).</param>
    public sealed record Settings(int Width = 1200, int Height = 600, int Smoothing = 100, bool LogX = false, bool LogY = false, string? Title = null);

    /// <summary>Writes the curve of <paramref name="rows"/> to <paramref name="path"/> (PNG).</summary>
    /// <exception cref="ArgumentException">There are no rows to draw.</exception>
    public static void Save(IReadOnlyList<MetricsRow> rows, string path, Settings settings)
    {
        // The last row of each step wins (a file written by train has one per step; a hand-made one may repeat steps).
        var steps = rows.Where(r => r.Kind == MetricsRow.StepKind && double.IsFinite(r.Loss) && (!settings.LogY || r.Loss > 0))
            .GroupBy(r => r.Step).Select(g => g.Last()).OrderBy(r => r.Step).ToArray();
        var evals = rows.Where(r => r.Kind == MetricsRow.EvalKind && r.FrechetDistance is double fd && double.IsFinite(fd) && (!settings.LogY || fd > 0))
            .GroupBy(r => r.Step).Select(g => g.Last()).OrderBy(r => r.Step).ToArray();
        if (steps.Length == 0 && evals.Length == 0)
            throw new ArgumentException("there are no step or evaluation rows with finite values to draw", nameof(rows));

        double X(long step) => settings.LogX ? Math.Log10(step) : step;
        double Y(double value) => settings.LogY ? Math.Log10(value) : value;

        var plot = new Plot();
        if (steps.Length > 0)
        {
            var xs = steps.Select(r => X(r.Step)).ToArray();
            var loss = steps.Select(r => r.Loss).ToArray();
            var raw = plot.Add.ScatterLine(xs, loss.Select(Y).ToArray(), Colors.SteelBlue.WithAlpha(0.25));
            raw.LineWidth = 1;
            raw.LegendText = "loss per step";
            int window = Math.Clamp(settings.Smoothing, 1, loss.Length);
            var average = plot.Add.ScatterLine(xs, MovingAverage(loss, window).Select(Y).ToArray(), Colors.SteelBlue);
            average.LineWidth = 2;
            average.LegendText = $"loss, mean of the last {window} steps";
        }
        plot.Axes.Left.Label.Text = "training loss";
        plot.Axes.Left.Label.ForeColor = Colors.SteelBlue;
        if (evals.Length > 0)
        {
            var distance = plot.Add.ScatterLine(evals.Select(r => X(r.Step)).ToArray(), evals.Select(r => Y(r.FrechetDistance!.Value)).ToArray(), Colors.OrangeRed);
            distance.LineWidth = 2;
            distance.MarkerSize = 8;
            distance.MarkerShape = MarkerShape.FilledCircle;
            var first = evals[0];
            distance.LegendText = $"Frechet distance ({first.EvalSamples} samples, {first.EvalSampler} {first.EvalSteps})";
            distance.Axes.YAxis = plot.Axes.Right;
            plot.Axes.Right.Label.Text = "Frechet distance (evaluate)";
            plot.Axes.Right.Label.ForeColor = Colors.OrangeRed;
        }
        plot.Axes.Bottom.Label.Text = "optimizer step";
        if (settings.LogX) plot.Axes.Bottom.TickGenerator = LogTicks();
        if (settings.LogY)
        {
            plot.Axes.Left.TickGenerator = LogTicks();
            // The distance often spans less than a decade: ticks between powers of ten too.
            if (evals.Length > 0) plot.Axes.Right.TickGenerator = LogTicks(integerPowers: false);
        }
        if (settings.Title is string title) plot.Title(title);
        // Below the axes, in one row: inside, any corner covers some curve.
        plot.ShowLegend(Edge.Bottom);
        plot.Legend.Orientation = Orientation.Horizontal;
        plot.SavePng(path, settings.Width, settings.Height);
    }

    /// <summary>mean(values[i - window + 1 .. i]) for each i (fewer at the start).</summary>
    public static double[] MovingAverage(IReadOnlyList<double> values, int window)
    {
        var result = new double[values.Count];
        double sum = 0;
        for (int i = 0; i < values.Count; i++)
        {
            sum += values[i];
            if (i >= window) sum -= values[i - window];
            result[i] = sum / Math.Min(i + 1, window);
        }
        return result;
    }

    /// <summary>Ticks on an axis that holds log10 values, labelled with the values: at powers of ten with log-spaced minor ticks,
    /// or (<paramref name="integerPowers"/> false) wherever the automatic ticks fall.</summary>
    private static NumericAutomatic LogTicks(bool integerPowers = true) => new()
    {
        MinorTickGenerator = integerPowers ? new LogMinorTickGenerator() : new EvenlySpacedMinorTickGenerator(2),
        IntegerTicksOnly = integerPowers,
        LabelFormatter = v => Math.Pow(10, v).ToString("G4", System.Globalization.CultureInfo.InvariantCulture),
    };
}
