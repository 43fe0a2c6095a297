using System.Globalization;

namespace Microsoft.ML.Diffusion.Samples.Metrics;

/// <summary>
/// One row of the metrics CSV that <c>train --metrics</c> writes and <c>plot</c> reads: a training step (kind <c>step</c>: its
/// loss, learning rate and throughput) or an evaluation at an epoch's end (kind <c>eval</c>: the epoch's mean loss, the
/// evaluate command's Frechet distance and KID, and for a class-conditional model the classifier's accuracy at guidance 1 and 3).
/// Empty cells are the fields a kind does not have.
/// </summary>
public sealed record MetricsRow
{
    /// <summary>Kind of a training-step row.</summary>
    public const string StepKind = "step";

    /// <summary>Kind of an evaluation row.</summary>
    public const string EvalKind = "eval";

    /// <summary>The file's first line.</summary>
    public const string Header =
        "kind,step,epoch,loss,learning_rate,images_per_second,frechet_distance,kid,eval_samples,eval_sampler,eval_steps," +
        "accuracy_guidance_1,accuracy_guidance_3,eval_seconds";

    private static readonly int ColumnCount = Header.Split(',').Length;

    /// <summary><see cref="StepKind"/> or <see cref="EvalKind"/>.</summary>
    public required string Kind { get; init; }
    /// <summary>Optimizer steps done (1-based; an evaluation: the step at the epoch's end).</summary>
    public required long Step { get; init; }
    /// <summary>The epoch (1-based).</summary>
    public required int Epoch { get; init; }
    /// <summary>The step's loss; for an evaluation, the epoch's mean loss (NaN when this run ran none of its steps).</summary>
    public required double Loss { get; init; }
    /// <summary>The learning rate of the step.</summary>
    public double? LearningRate { get; init; }
    /// <summary>Training throughput of the run so far.</summary>
    public double? ImagesPerSecond { get; init; }
    /// <summary>The evaluate command's FID-like Frechet distance.</summary>
    public double? FrechetDistance { get; init; }
    /// <summary>The evaluate command's KID.</summary>
    public double? Kid { get; init; }
    /// <summary>Images generated for the distance.</summary>
    public int? EvalSamples { get; init; }
    /// <summary>The sampler's command-line name.</summary>
    public string? EvalSampler { get; init; }
    /// <summary>The sampler's steps.</summary>
    public int? EvalSteps { get; init; }
    /// <summary>Mean per-class accuracy of the classifier at classifier-free guidance w = 1 (class-conditional models).</summary>
    public double? AccuracyGuidance1 { get; init; }
    /// <summary>The same at w = 3.</summary>
    public double? AccuracyGuidance3 { get; init; }
    /// <summary>Wall time of the evaluation.</summary>
    public double? EvalSeconds { get; init; }

    /// <summary>The row as one CSV line (invariant culture; no field contains a comma).</summary>
    public string ToCsv() => string.Join(',',
        Kind, Step.ToString(CultureInfo.InvariantCulture), Epoch.ToString(CultureInfo.InvariantCulture), Number(Loss, "G7"),
        Number(LearningRate, "G6"), Number(ImagesPerSecond, "F2"), Number(FrechetDistance, "G7"), Number(Kid, "G6"),
        EvalSamples?.ToString(CultureInfo.InvariantCulture) ?? "", EvalSampler ?? "", EvalSteps?.ToString(CultureInfo.InvariantCulture) ?? "",
        Number(AccuracyGuidance1, "G5"), Number(AccuracyGuidance3, "G5"), Number(EvalSeconds, "F1"));

    private static string Number(double? value, string format) => value?.ToString(format, CultureInfo.InvariantCulture) ?? "";

    /// <summary>Parses a line written by <see cref="ToCsv"/>; throws a <see cref="FormatException"/> naming the bad field.</summary>
    public static MetricsRow Parse(string line)
    {
        var f = line.Split(',');
        if (f.Length != ColumnCount)
            throw new FormatException($"{f.Length} fields; expected {ColumnCount} ({Header})");
        string kind = f[0].Trim();
        if (kind != StepKind && kind != EvalKind)
            throw new FormatException($"kind '{kind}'; expected '{StepKind}' or '{EvalKind}'");
        long step = Integer(f[1], "step", 1);
        return new MetricsRow
        {
            Kind = kind, Step = step, Epoch = (int)Integer(f[2], "epoch", 1, int.MaxValue), Loss = Real(f[3], "loss") ?? double.NaN,
            LearningRate = Real(f[4], "learning_rate"), ImagesPerSecond = Real(f[5], "images_per_second"),
            FrechetDistance = Real(f[6], "frechet_distance"), Kid = Real(f[7], "kid"),
            EvalSamples = f[8].Length == 0 ? null : (int)Integer(f[8], "eval_samples", 1, int.MaxValue),
            EvalSampler = f[9].Length == 0 ? null : f[9],
            EvalSteps = f[10].Length == 0 ? null : (int)Integer(f[10], "eval_steps", 1, int.MaxValue),
            AccuracyGuidance1 = Real(f[11], "accuracy_guidance_1"), AccuracyGuidance3 = Real(f[12], "accuracy_guidance_3"),
            EvalSeconds = Real(f[13], "eval_seconds"),
        };
    }

    private static long Integer(string text, string column, long minimum, long maximum = long.MaxValue)
    {
        if (!long.TryParse(text.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long value) || value < minimum || value > maximum)
            throw new FormatException($"{column} '{text}'; expected an integer >= {minimum}");
        return value;
    }

    private static double? Real(string text, string column)
    {
        text = text.Trim();
        if (text.Length == 0) return null;
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
            throw new FormatException($"{column} '{text}'; expected a number");
        return value;
    }

    /// <summary>
    /// Reads a metrics file: the <see cref="Header"/>, then rows. Throws a <see cref="FormatException"/> naming the line when the
    /// file is not one (another header, a garbled row).
    /// </summary>
    public static List<MetricsRow> ReadAll(string path)
    {
        var rows = new List<MetricsRow>();
        int number = 0;
        foreach (var line in File.ReadLines(path))
        {
            number++;
            if (number == 1)
            {
                if (line.Trim() != Header)
                    throw new FormatException($"line 1 is not the metrics header '{Header}'");
                continue;
            }
            if (line.Trim().Length == 0) continue;
            try
            {
                rows.Add(Parse(line));
            }
            catch (FormatException e)
            {
                throw new FormatException($"line {number}: {e.Message}", e);
            }
        }
        if (number == 0) throw new FormatException("the file is empty");
        return rows;
    }
}
