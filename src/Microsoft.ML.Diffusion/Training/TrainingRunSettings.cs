namespace Microsoft.ML.Diffusion.Training;

/// <summary>The members every trainer's Options class has (implemented by their public properties of the same names).</summary>
internal interface ITrainingRunOptions
{
    /// <summary>The training images.</summary>
    string ImageColumnName { get; }
    /// <summary>Passes over the data.</summary>
    int Epochs { get; }
    /// <summary>Images per optimizer step.</summary>
    int BatchSize { get; }
    /// <summary>Stop after this many optimizer steps in all (null: run all epochs).</summary>
    long? MaxSteps { get; }
    /// <summary>Rows held by the shuffle buffer.</summary>
    int ShuffleBufferSize { get; }
    /// <summary>Steps between two log lines.</summary>
    int LogInterval { get; }
    /// <summary>Where checkpoints are written and resumed from (null: none).</summary>
    string? CheckpointDirectory { get; }
    /// <summary>Optimizer steps between checkpoints.</summary>
    int CheckpointInterval { get; }
    /// <summary>Receives a report after every optimizer step.</summary>
    IProgress<TrainingProgress>? Progress { get; }
    /// <summary>Stops training between two steps.</summary>
    CancellationToken CancellationToken { get; }
}

/// <summary>What every trainer's options say about the run (the members of the same names in each Options class).</summary>
internal sealed record TrainingRunSettings
{
    /// <summary>The settings of <paramref name="options"/>.</summary>
    public static TrainingRunSettings From(ITrainingRunOptions options) => new()
    {
        ImageColumnName = options.ImageColumnName, Epochs = options.Epochs, BatchSize = options.BatchSize, MaxSteps = options.MaxSteps,
        ShuffleBufferSize = options.ShuffleBufferSize, LogInterval = options.LogInterval, CheckpointDirectory = options.CheckpointDirectory,
        CheckpointInterval = options.CheckpointInterval, Progress = options.Progress, CancellationToken = options.CancellationToken,
    };

    /// <summary>The image column (named in errors).</summary>
    public required string ImageColumnName { get; init; }
    /// <summary>Passes over the data.</summary>
    public required int Epochs { get; init; }
    /// <summary>Rows per optimizer step.</summary>
    public required int BatchSize { get; init; }
    /// <summary>Stop after this many optimizer steps in all (null: run all epochs).</summary>
    public long? MaxSteps { get; init; }
    /// <summary>Rows held by the shuffle buffer.</summary>
    public required int ShuffleBufferSize { get; init; }
    /// <summary>Steps between two log lines.</summary>
    public required int LogInterval { get; init; }
    /// <summary>Where checkpoints are written and resumed from (null: none).</summary>
    public string? CheckpointDirectory { get; init; }
    /// <summary>Optimizer steps between checkpoints.</summary>
    public int CheckpointInterval { get; init; } = DiffusionDefaults.CheckpointInterval;
    /// <summary>Receives a report after every optimizer step.</summary>
    public IProgress<TrainingProgress>? Progress { get; init; }
    /// <summary>Stops training between two steps.</summary>
    public CancellationToken CancellationToken { get; init; }

    /// <summary>The optimizer steps of the run when the row count is known (or MaxSteps is set), else null.</summary>
    public long? PlannedSteps(long? rowCount)
    {
        long? steps = rowCount is long rows ? (rows + BatchSize - 1) / BatchSize * Epochs : null;
        if (MaxSteps is long max) steps = steps is long s ? Math.Min(s, max) : max;
        return steps;
    }

    /// <summary>Throws when the data view knows that it holds fewer than BatchSize rows (null: unknown, checked while reading).</summary>
    public void RequireRows(long? rowCount)
    {
        if (rowCount is long known && known < BatchSize)
            throw TooFewRows(known);
    }

    /// <summary>The error for an input of <paramref name="rows"/> rows, fewer than BatchSize.</summary>
    public InvalidOperationException TooFewRows(long rows) => new(rows == 0
        ? $"Column '{ImageColumnName}': the input has no rows; expected at least BatchSize = {BatchSize} images."
        : $"Column '{ImageColumnName}': the input has {rows} rows, fewer than BatchSize = {BatchSize}; lower BatchSize or add images.");
}
