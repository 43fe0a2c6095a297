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
    /// Loads a model zip saved with <c>mlContext.Model.Save</c>, like <c>mlContext.Model.Load</c>, but a damaged, truncated,
    /// forged or too new file fails with an <see cref="InvalidDataException"/> whose message names the file and what is wrong
    /// (ML.NET itself reports a component's error wrapped in a TargetInvocationException, and a damaged zip without its name).
    /// </summary>
    /// <param name="path">The model zip.</param>
    /// <param name="inputSchema">The input schema saved with the model.</param>
    public ITransformer LoadModel(string path, out DataViewSchema inputSchema) =>
        Persistence.ModelFileLoader.Load(Context, path, out inputSchema);

    /// <summary>Loads a <see cref="DiffusionModel"/> (alone, or the last transformer of a saved chain) with the errors of
    /// <see cref="LoadModel"/>; throws <see cref="InvalidDataException"/> when the file holds another kind of model.</summary>
    /// <param name="path">The model zip.</param>
    public DiffusionModel LoadDiffusionModel(string path) =>
        Persistence.ModelFileLoader.LoadDiffusionModel(Context, path, out _);

    private sealed class SeedRow
    {
        public uint Seed { get; set; }
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
