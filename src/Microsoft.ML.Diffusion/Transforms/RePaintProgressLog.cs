using System.Diagnostics;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Diffusion.Transforms;

/// <summary>
/// The progress of one RePaint batch of a transform (inpainting, upscaling): forwards each schedule entry to the user's
/// <see cref="RePaintOptions.Progress"/> with the batch's index in the whole input (row / BatchSize), and writes a line to the
/// MLContext log (<c>mlContext.Log</c>) when the batch starts and after each tenth of its schedule entries, with the elapsed
/// time and an estimate of the time left, so a long run (the defaults make 2,410 network calls per batch) is never silent.
/// </summary>
internal sealed class RePaintProgressLog : IProgress<SamplingProgress>
{
    /// <summary>Log lines per batch after the first one.</summary>
    public const int LinesPerBatch = 10;

    private readonly IChannel _channel;
    private readonly IProgress<SamplingProgress>? _user;
    private readonly int _batchIndex;
    private readonly string _rows;
    private readonly Stopwatch _watch = Stopwatch.StartNew();
    private int _nextLine = 1;

    private RePaintProgressLog(IChannel channel, IProgress<SamplingProgress>? user, int batchIndex, string rows)
    {
        _channel = channel;
        _user = user;
        _batchIndex = batchIndex;
        _rows = rows;
    }

    /// <summary>Starts the log of the batch of <paramref name="count"/> rows from <paramref name="firstRow"/> and writes its first line.</summary>
    public static RePaintProgressLog Start(IChannel channel, string what, RePaintOptions options, int timesteps, long firstRow, int count)
    {
        string rows = count == 1 ? $"row {firstRow}" : $"rows {firstRow}..{firstRow + count - 1}";
        int batchIndex = (int)Math.Min(int.MaxValue, firstRow / options.BatchSize);
        channel.Info($"{what}, {rows}: {options.ScheduleLength(timesteps):N0} schedule entries, {options.NetworkCalls(timesteps):N0} network calls " +
                     $"(Steps {options.ResolveSteps(timesteps)}, JumpLength {options.JumpLength}, Resamplings {options.Resamplings}).");
        return new RePaintProgressLog(channel, options.Progress, batchIndex, $"{what}, {rows}");
    }

    public void Report(SamplingProgress value)
    {
        _user?.Report(value with { BatchIndex = _batchIndex, BatchCount = 0 });
        // Line k of LinesPerBatch is due when k tenths of the entries are done (the last one at the end).
        if ((long)value.Step * LinesPerBatch < (long)_nextLine * value.TotalSteps) return;
        while ((long)value.Step * LinesPerBatch >= (long)_nextLine * value.TotalSteps) _nextLine++;
        double elapsed = _watch.Elapsed.TotalSeconds;
        double left = elapsed / value.Step * (value.TotalSteps - value.Step);
        _channel.Info($"{_rows}: {value.Step:N0}/{value.TotalSteps:N0} schedule entries ({100.0 * value.Step / value.TotalSteps:F0}%), " +
                      $"{elapsed:F1} s{(value.Step < value.TotalSteps ? $", about {left:F0} s left" : "")}.");
    }
}
