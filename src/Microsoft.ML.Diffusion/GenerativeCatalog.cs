using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Generative models in ML.NET: <c>mlContext.Generative.Diffusion(...)</c> trains a diffusion model,
/// <c>mlContext.Generative.CreateRequests(...)</c> makes the rows it generates images for.
/// </summary>
public sealed class GenerativeCatalog
{
    internal GenerativeCatalog(MLContext context) => Context = context;

    internal MLContext Context { get; }

    /// <summary>A diffusion trainer with all options.</summary>
    public DiffusionTrainer Diffusion(DiffusionTrainer.Options options) => new(Context, options);

    /// <summary>A diffusion trainer with the common options; the rest keep their defaults (<see cref="DiffusionDefaults"/>).</summary>
    /// <param name="outputColumnName">Column the trained model writes generated images to.</param>
    /// <param name="imageColumnName">Column of training images (MLImage).</param>
    /// <param name="imageSize">Image side in pixels.</param>
    /// <param name="channels">1 (grayscale) or 3 (RGB).</param>
    /// <param name="epochs">Passes over the data.</param>
    /// <param name="batchSize">Images per optimizer step.</param>
    /// <param name="timesteps">T, diffusion timesteps.</param>
    /// <param name="schedule">Beta schedule.</param>
    public DiffusionTrainer Diffusion(
        string outputColumnName = DiffusionDefaults.OutputColumnName,
        string imageColumnName = DiffusionDefaults.ImageColumnName,
        int imageSize = DiffusionDefaults.ImageSize,
        int channels = DiffusionDefaults.Channels,
        int epochs = DiffusionDefaults.Epochs,
        int batchSize = DiffusionDefaults.BatchSize,
        int timesteps = DiffusionDefaults.Timesteps,
        NoiseSchedule schedule = NoiseSchedule.Linear) =>
        new(Context, new DiffusionTrainer.Options
        {
            OutputColumnName = outputColumnName, ImageColumnName = imageColumnName, ImageSize = imageSize, Channels = channels,
            Epochs = epochs, BatchSize = batchSize, Timesteps = timesteps, Schedule = schedule,
        });

    /// <summary>
    /// <paramref name="count"/> generation requests: one row each, with a UInt32 seed column holding
    /// <paramref name="seed"/>, <paramref name="seed"/> + 1, ...
    /// </summary>
    public IDataView CreateRequests(int count, uint seed = 0, string seedColumnName = DiffusionDefaults.SeedColumnName)
    {
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count), count, "count must be >= 0.");
        var rows = Enumerable.Range(0, count).Select(i => new SeedRow { Seed = unchecked(seed + (uint)i) }).ToArray();
        var definition = SchemaDefinition.Create(typeof(SeedRow));
        definition[nameof(SeedRow.Seed)].ColumnName = seedColumnName;
        return Context.Data.LoadFromEnumerable(rows, definition);
    }

    /// <summary>
    /// <paramref name="labels"/>.Count generation requests for a class-conditional model: row i has seed
    /// <paramref name="seed"/> + i and class label <paramref name="labels"/>[i] (an Int32 column, annotated so that a model
    /// without class conditioning rejects it). The model applies its sampler's <see cref="SamplerOptions.GuidanceScale"/>.
    /// </summary>
    /// <param name="count">Rows; must equal labels.Count.</param>
    /// <param name="seed">Seed of the first row.</param>
    /// <param name="labels">One class index (0..NumClasses - 1) per row.</param>
    /// <param name="seedColumnName">The seed column's name.</param>
    /// <param name="labelColumnName">The label column's name: the model's <see cref="DiffusionModel.LabelColumnName"/>.</param>
    public IDataView CreateRequests(int count, uint seed, IReadOnlyList<int> labels, string seedColumnName = DiffusionDefaults.SeedColumnName,
        string labelColumnName = DiffusionDefaults.LabelColumnName)
    {
        ArgumentNullException.ThrowIfNull(labels);
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count), count, "count must be >= 0.");
        if (labels.Count != count)
            throw new ArgumentException($"{labels.Count} labels were given for {count} requests; expected one label per request.", nameof(labels));
        for (int i = 0; i < count; i++)
            if (labels[i] < 0)
                throw new ArgumentOutOfRangeException(nameof(labels), labels[i], $"Label {labels[i]} (request {i}) is negative; expected a class index >= 0.");
        var rows = Enumerable.Range(0, count).Select(i => new LabeledSeedRow { Seed = unchecked(seed + (uint)i), Label = labels[i] }).ToArray();
        var definition = SchemaDefinition.Create(typeof(LabeledSeedRow));
        var seedColumn = definition[nameof(LabeledSeedRow.Seed)];
        var labelColumn = definition[nameof(LabeledSeedRow.Label)];
        seedColumn.ColumnName = seedColumnName;
        labelColumn.ColumnName = labelColumnName;
        labelColumn.AddAnnotation(LabelColumn.RequestAnnotation, true, BooleanDataViewType.Instance);
        return Context.Data.LoadFromEnumerable(rows, definition);
    }

    private sealed class SeedRow
    {
        public uint Seed { get; set; }
    }

    private sealed class LabeledSeedRow
    {
        public uint Seed { get; set; }
        public int Label { get; set; }
    }
}

/// <summary>Adds <c>Generative</c> to <see cref="MLContext"/>.</summary>
public static class GenerativeCatalogExtensions
{
    extension(MLContext mlContext)
    {
        /// <summary>Generative models: diffusion training, generation requests.</summary>
        public GenerativeCatalog Generative => new(mlContext);
    }

    /// <summary>The generative catalog, for C# versions without extension properties.</summary>
    public static GenerativeCatalog GetGenerativeCatalog(this MLContext mlContext) => new(mlContext);
}
