using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Runtime;
using Microsoft.ML.Transforms.Image;
using TorchSharp;
using static TorchSharp.torch;

[assembly: LoadableClass(typeof(DiffusionModel), null, typeof(SignatureLoadModel),
    "Diffusion Model", DiffusionModel.LoaderSignature)]

namespace Microsoft.ML.Diffusion;

/// <summary>
/// A trained diffusion model: an <see cref="ITransformer"/> that adds one generated image per input row
/// (row i's noise comes from its Seed column, or from the default seed + i when the input has none), and
/// <see cref="Generate(int, SamplerOptions?)"/> for direct use. Saved and loaded with mlContext.Model, weights included.
/// </summary>
public sealed class DiffusionModel : ITransformer, ICanSaveModel, IDisposable
{
    internal const string LoaderSignature = "DiffusionModel";
    private readonly IHost _host;
    private readonly UNet _network;
    private readonly DiffusionSchedule _schedule;
    private readonly Device _device;
    private readonly bool _ownsNetwork;
    private readonly SamplerOptions _defaultSampler;
    private bool _disposed;

    internal DiffusionModel(IHostEnvironment env, DiffusionModelConfig config, UNet network, Device device, bool ownsNetwork = true)
    {
        _ownsNetwork = ownsNetwork;
        _host = env.Register(nameof(DiffusionModel));
        Config = config;
        _network = network;
        _device = device;
        _network.to(device);
        _network.eval();
        _schedule = new DiffusionSchedule(config.Schedule, config.Timesteps);
        _defaultSampler = config.DefaultSampler.ToOptions();
    }

    /// <summary>The network, schedule, image format and columns of this model.</summary>
    public DiffusionModelConfig Config { get; }

    /// <summary>Image side in pixels.</summary>
    public int ImageSize => Config.ImageSize;

    /// <summary>1 (grayscale) or 3 (RGB).</summary>
    public int Channels => Config.Channels;

    /// <summary>T, the number of diffusion timesteps.</summary>
    public int Timesteps => Config.Timesteps;

    /// <summary>The column <see cref="Transform"/> adds.</summary>
    public string OutputColumnName => Config.OutputColumnName;

    /// <summary>The request seed column read by <see cref="Transform"/> when present.</summary>
    public string SeedColumnName => Config.SeedColumnName;

    /// <summary>The sampler <see cref="Transform"/> uses (a copy; see <see cref="WithSampler"/>).</summary>
    public SamplerOptions DefaultSampler => _defaultSampler.Clone();

    /// <summary>The network's parameter count.</summary>
    public long ParameterCount => _network.ParameterCount;

    /// <summary>The noise schedule.</summary>
    public DiffusionSchedule Schedule => _schedule;

    /// <summary>The device the network runs on.</summary>
    public Device Device => _device;

    internal UNet Network => _network;

    /// <summary>A model sharing these weights whose <see cref="Transform"/> uses <paramref name="sampler"/>.</summary>
    public DiffusionModel WithSampler(SamplerOptions sampler)
    {
        ArgumentNullException.ThrowIfNull(sampler);
        sampler.Validate(Timesteps);
        return new DiffusionModel(_host, Config with { DefaultSampler = SamplerSettings.From(sampler) }, _network, _device, ownsNetwork: false);
    }

    /// <summary>
    /// Generates <paramref name="count"/> images; image i uses seed <c>options.Seed + i</c>, so the result equals
    /// <c>Transform(mlContext.Generative.CreateRequests(count, options.Seed))</c>.
    /// </summary>
    public IReadOnlyList<MLImage> Generate(int count, SamplerOptions? options = null)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), count, "count must be >= 1.");
        options ??= DefaultSampler;
        var seeds = Enumerable.Range(0, count).Select(i => unchecked(options.Seed + (uint)i)).ToArray();
        return GeneratePixels(seeds, options)
            .Select(p => MLImage.CreateFromPixels(ImageSize, ImageSize, MLPixelFormat.Bgra32, p)).ToArray();
    }

    /// <summary>Generates and returns images as a float tensor [count, C, H, W] in [-1, 1] on the CPU.</summary>
    public Tensor GenerateTensor(IReadOnlyList<uint> seeds, SamplerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(seeds);
        options ??= DefaultSampler;
        var scheduler = SchedulerFactory.Create(_schedule, options);
        int batches = (seeds.Count + options.BatchSize - 1) / options.BatchSize;
        var parts = new List<Tensor>();
        try
        {
            for (int b = 0; b < batches; b++)
            {
                var chunk = seeds.Skip(b * options.BatchSize).Take(options.BatchSize).ToArray();
                parts.Add(DiffusionSampler.Sample(Denoise, scheduler, chunk, new long[] { Channels, ImageSize, ImageSize }, _device,
                    options.Progress, options.CancellationToken, b, batches));
            }
            return parts.Count == 1 ? parts[0] : cat(parts, 0);
        }
        finally
        {
            if (parts.Count > 1) foreach (var p in parts) p.Dispose();
        }
    }

    /// <summary>Bgra32 pixels of the images for <paramref name="seeds"/>.</summary>
    internal byte[][] GeneratePixels(IReadOnlyList<uint> seeds, SamplerOptions options)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var images = GenerateTensor(seeds, options);
        return ImageTensorConverter.ToBgraPixels(images);
    }

    private Tensor Denoise(Tensor x, Tensor t) => _network.forward(x, t);

    // ---- ITransformer ----

    /// <summary>Always true: the model maps each row on its own (a PredictionEngine works).</summary>
    public bool IsRowToRowMapper => true;

    /// <summary>The input schema plus the output image column (ImageDataViewType ImageSize x ImageSize).</summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        CheckSeedColumn(inputSchema);
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema.Where(c => !c.IsHidden && c.Name != OutputColumnName));
        builder.AddColumn(OutputColumnName, new ImageDataViewType(ImageSize, ImageSize));
        return builder.ToSchema();
    }

    /// <summary>The seed column when present (UInt32); throws when it has another type.</summary>
    internal DataViewSchema.Column? CheckSeedColumn(DataViewSchema schema)
    {
        var col = schema.GetColumnOrNull(SeedColumnName);
        if (col is { } c && c.Type != NumberDataViewType.UInt32)
            throw new ArgumentOutOfRangeException(nameof(schema),
                $"Column '{SeedColumnName}' has type {c.Type}; expected UInt32 seeds (see mlContext.Generative.CreateRequests).");
        return col;
    }

    /// <summary>Lazily adds the generated images; rows are generated in batches of the sampler's BatchSize.</summary>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new GeneratedImageDataView(this, input, GetOutputSchema(input.Schema));
    }

    /// <summary>A row-to-row mapper (one image per row, batch of one) for PredictionEngine.</summary>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return new GeneratedImageRowMapper(this, inputSchema, GetOutputSchema(inputSchema));
    }

    // ---- persistence ----

    void ICanSaveModel.Save(ModelSaveContext ctx) => DiffusionModelFormat.Save(ctx, Config, _network);

    private static DiffusionModel Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        var (config, network) = DiffusionModelFormat.Load(env, ctx);
        return new DiffusionModel(env, config, network, DeviceSelection.Select(env));
    }

    /// <summary>Frees the network's native memory (models made by <see cref="WithSampler"/> share it and free nothing).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_ownsNetwork) _network.Dispose();
    }
}
