using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Columns;

namespace Microsoft.ML.Diffusion.Training;

/// <summary>A batch of training rows, filled by <see cref="BatchStream.Batches"/>: the first <see cref="Count"/> rows of
/// <see cref="Pixels"/> (CHW floats in [-1, 1], one row after the other) and of <see cref="Labels"/>. The stream reuses it for
/// the next batch.</summary>
internal sealed class TrainingBatch
{
    public TrainingBatch(int batchSize, int pixelsPerRow, bool withLabels)
    {
        PixelsPerRow = pixelsPerRow;
        Pixels = new float[batchSize * pixelsPerRow];
        Labels = withLabels ? new long[batchSize] : null;
    }

    /// <summary>Floats per row (channels x side x side).</summary>
    public int PixelsPerRow { get; }

    /// <summary>The rows' pixels, row after row.</summary>
    public float[] Pixels { get; }

    /// <summary>The rows' class indices (the model's class count for a missing key), when a label column is read.</summary>
    public long[]? Labels { get; }

    /// <summary>Rows in the batch: the batch size, or fewer for the last batch of an epoch.</summary>
    public int Count { get; set; }

    /// <summary>The images as a new tensor [Count, <paramref name="channels"/>, <paramref name="size"/>, <paramref name="size"/>] on the CPU.</summary>
    public Tensor Images(int channels, int size) =>
        tensor(Pixels.AsSpan(0, Count * PixelsPerRow).ToArray(), new long[] { Count, channels, size, size });

    /// <summary>The labels as a new int64 tensor [Count] on the CPU, or null without a label column.</summary>
    public Tensor? LabelTensor() => Labels is null ? null : tensor(Labels.AsSpan(0, Count).ToArray(), dtype: ScalarType.Int64);
}

/// <summary>Training rows streamed from a data view's cursor through a shuffle buffer, and their batches; nothing is copied
/// whole into memory.</summary>
internal static class BatchStream
{
    /// <summary>
    /// Streams the image column as [-1, 1] CHW float rows (with their class index when <paramref name="labelCol"/> is set,
    /// <paramref name="numClasses"/> for a missing key) in a shuffled order: a buffer of <paramref name="bufferSize"/>
    /// rows, each new row replacing a random one that is emitted (the same pool shuffle as ML.NET's ShuffleRows).
    /// </summary>
    public static IEnumerable<(float[] Pixels, long Label)> Rows(IDataView input, TrainingImageInput imageCol, DataViewSchema.Column? labelCol,
        int numClasses, int per, long seed, int bufferSize, CancellationToken ct)
    {
        var rng = new Random(unchecked((int)(seed ^ (seed >> 32))));
        var pool = new List<(float[] Pixels, long Label)>(Math.Min(bufferSize, 65536));
        using var cursor = input.GetRowCursor(labelCol is { } lc ? new[] { imageCol.Column, lc } : new[] { imageCol.Column });
        var read = imageCol.CreateReader(cursor);
        long row = 0;
        var labelReader = labelCol is { } l ? LabelColumn.Reader(cursor, l, numClasses, () => row) : null;
        while (cursor.MoveNext())
        {
            ct.ThrowIfCancellationRequested();
            var pixels = new float[per];
            read(row, pixels);
            var values = (pixels, labelReader?.Invoke() ?? 0L);
            row++;
            if (pool.Count < bufferSize)
            {
                pool.Add(values);
                continue;
            }
            int j = rng.Next(pool.Count);
            var emit = pool[j];
            pool[j] = values;
            yield return emit;
        }
        // Fisher-Yates over what is left.
        for (int i = pool.Count - 1; i >= 0; i--)
        {
            int j = rng.Next(i + 1);
            (pool[i], pool[j]) = (pool[j], pool[i]);
            yield return pool[i];
        }
    }

    /// <summary>
    /// Groups <paramref name="rows"/> into batches of <paramref name="batchSize"/> (the last one smaller when the rows do not
    /// divide evenly). <paramref name="checkRow"/>, when set, sees each row's label and its index in the stream before the row
    /// joins a batch. The same <see cref="TrainingBatch"/> object is yielded each time: use it before asking for the next.
    /// </summary>
    public static IEnumerable<TrainingBatch> Batches(IEnumerable<(float[] Pixels, long Label)> rows, int batchSize, int per, bool withLabels,
        Action<long, long>? checkRow = null)
    {
        var batch = new TrainingBatch(batchSize, per, withLabels);
        long index = 0;
        foreach (var (pixels, label) in rows)
        {
            checkRow?.Invoke(label, index++);
            pixels.CopyTo(batch.Pixels, batch.Count * per);
            if (batch.Labels is not null) batch.Labels[batch.Count] = label;
            if (++batch.Count < batchSize) continue;
            yield return batch;
            batch.Count = 0;
        }
        if (batch.Count > 0) yield return batch;   // the last, smaller batch
    }
}
