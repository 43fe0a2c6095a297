using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Training;
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
    private readonly object _lowPrecisionLock = new();
    private LowPrecisionCopy? _bf16;                       // made on first bfloat16 use (SamplerOptions.Precision)
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
        var seeds = Enumerable.Range(0, count).Select(i => SeedOfRow(options, i)).ToArray();
        return GeneratePixels(seeds, options)
            .Select(p => MLImage.CreateFromPixels(ImageSize, ImageSize, MLPixelFormat.Bgra32, p)).ToArray();
    }

    /// <summary>The seed of row <paramref name="row"/> when no seed column gives one: <c>options.Seed + row</c> (wrapping).</summary>
    internal static uint SeedOfRow(SamplerOptions options, long row) => unchecked(options.Seed + (uint)row);

    /// <summary>Generates and returns images as a float tensor [count, C, H, W] in [-1, 1] on the CPU.</summary>
    public Tensor GenerateTensor(IReadOnlyList<uint> seeds, SamplerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(seeds);
        return SampleInBatches(seeds, options ?? DefaultSampler, initialNoise: null);
    }

    /// <summary>
    /// The batching loop of <see cref="GenerateTensor"/> and <see cref="Interpolate"/>: batches of
    /// <see cref="SamplerOptions.BatchSize"/> images, each with a fresh scheduler and self-conditioning state, so an image
    /// does not depend on the batch it is in. <paramref name="initialNoise"/> [count, C, H, W], when given, replaces the
    /// per-seed x_T. Returns x_0 [count, C, H, W] on the CPU.
    /// </summary>
    private Tensor SampleInBatches(IReadOnlyList<uint> seeds, SamplerOptions options, Tensor? initialNoise)
    {
        var shape = new long[] { Channels, ImageSize, ImageSize };
        int batches = (seeds.Count + options.BatchSize - 1) / options.BatchSize;
        var parts = new List<Tensor>();
        try
        {
            for (int b = 0; b < batches; b++)
            {
                int start = b * options.BatchSize, n = Math.Min(options.BatchSize, seeds.Count - start);
                var chunk = seeds.Skip(start).Take(n).ToArray();
                var scheduler = SchedulerFactory.Create(_schedule, options, Config.Prediction, Config.Variance);
                try
                {
                    using var noise = initialNoise?.narrow(0, start, n);
                    using var selfConditioned = NewSelfConditionedDenoiser(options.Precision);
                    parts.Add(DiffusionSampler.Sample(DenoiserFor(selfConditioned, options.Precision), scheduler, chunk, shape, _device,
                        options.Progress, options.CancellationToken, b, batches, noise));
                }
                finally
                {
                    (scheduler as IDisposable)?.Dispose();
                }
            }
            return parts.Count == 1 ? parts[0] : cat(parts, 0);
        }
        finally
        {
            if (parts.Count > 1) foreach (var p in parts) p.Dispose();
        }
    }

    /// <summary>
    /// Images along the spherical linear interpolation (slerp) between the starting noises x_T of <paramref name="seedA"/>
    /// and <paramref name="seedB"/> (Song et al. 2021, DDIM, section 5.3 / figure 6; slerp as in Shoemake 1985:
    /// x(a) = sin((1 - a) theta)/sin(theta) x_A + sin(a theta)/sin(theta) x_B with cos(theta) = x_A.x_B / (|x_A| |x_B|)),
    /// each denoised with a deterministic sampler. Image 0 equals <c>Generate(1, Seed = seedA)</c> and the last equals
    /// <c>Generate(1, Seed = seedB)</c> with the same <paramref name="options"/>.
    /// </summary>
    /// <param name="seedA">Seed of the first end point.</param>
    /// <param name="seedB">Seed of the last end point.</param>
    /// <param name="count">Number of images, at least 2 (both end points included, a = i / (count - 1)).</param>
    /// <param name="options">A deterministic sampler (DDIM with eta 0, or DPM-Solver++); null uses <see cref="DefaultSampler"/>.
    /// <see cref="SamplerOptions.Seed"/> is ignored.</param>
    /// <exception cref="ArgumentException">The sampler adds noise at each step (DDPM, or DDIM with eta &gt; 0), so the
    /// images would not depend on x_T alone.</exception>
    public IReadOnlyList<MLImage> Interpolate(uint seedA, uint seedB, int count, SamplerOptions? options = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (count < 2) throw new ArgumentOutOfRangeException(nameof(count), count, "count must be >= 2 (both end points are included).");
        options ??= DefaultSampler;
        var probe = SchedulerFactory.Create(_schedule, options, Config.Prediction, Config.Variance);
        if (probe.NeedsNoise)
        {
            throw new ArgumentException(
                $"Interpolate needs a deterministic sampler (DDIM with Eta = 0, or DPM-Solver++); {options.Sampler}" +
                (options.Sampler == SamplerKind.Ddim ? $" with Eta = {options.Eta}" : string.Empty) +
                " adds fresh noise at every step, so the images would not follow the interpolated starting noise.", nameof(options));
        }

        (probe as IDisposable)?.Dispose();
        using var noise = SlerpNoise(seedA, seedB, count, new long[] { Channels, ImageSize, ImageSize });
        var seeds = Enumerable.Repeat(seedA, count).ToArray();      // unused: the sampler draws no noise
        using var x0 = SampleInBatches(seeds, options, noise);
        return ImageTensorConverter.ToBgraPixels(x0).Select(p => MLImage.CreateFromPixels(ImageSize, ImageSize, MLPixelFormat.Bgra32, p)).ToList();
    }

    /// <summary>[count, C, H, W] float32: slerp between the x_T of two seeds, computed in float64, end points exact.</summary>
    internal static Tensor SlerpNoise(uint seedA, uint seedB, int count, long[] imageShape)
    {
        using var scope = NewDisposeScope();
        var a = DiffusionSampler.InitialNoise(seedA, imageShape).to_type(float64);
        var b = DiffusionSampler.InitialNoise(seedB, imageShape).to_type(float64);
        double cos = (a * b).sum().item<double>() / (a.norm().item<double>() * b.norm().item<double>());
        double theta = Math.Acos(Math.Clamp(cos, -1.0, 1.0));
        double sinTheta = Math.Sin(theta);
        var frames = new Tensor[count];
        for (int i = 0; i < count; i++)
        {
            double alpha = (double)i / (count - 1);
            // Slerp; nearly parallel noises (theta ~ 0, e.g. seedA == seedB) fall back to linear interpolation.
            var (wa, wb) = sinTheta > 1e-6
                ? (Math.Sin((1.0 - alpha) * theta) / sinTheta, Math.Sin(alpha * theta) / sinTheta)
                : (1.0 - alpha, alpha);
            frames[i] = Schedulers.SchedulerCore.Combine(wa, a, wb, b);
        }

        return stack(frames).to_type(float32).MoveToOuterDisposeScope();
    }

    /// <summary>Bgra32 pixels of the images for <paramref name="seeds"/>.</summary>
    internal byte[][] GeneratePixels(IReadOnlyList<uint> seeds, SamplerOptions options)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var images = GenerateTensor(seeds, options);
        return ImageTensorConverter.ToBgraPixels(images);
    }

    private Tensor Denoise(Tensor x, Tensor t) => _network.forward(x, t);

    /// <summary>The network as a function of (x_t, t) in <paramref name="precision"/>; its output is float32 either way.</summary>
    private Func<Tensor, Tensor, Tensor> NetworkIn(Precision precision)
    {
        if (precision == Precision.Fp32) return Denoise;
        lock (_lowPrecisionLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _bf16 ??= new LowPrecisionCopy(_network, bfloat16);
            return _bf16.Forward;
        }
    }

    /// <summary>For a self-conditioned model (<see cref="DiffusionModelConfig.SelfConditioning"/>), a new per-batch denoiser that feeds
    /// the network the previous step's x_0 estimate (Analog Bits, algorithm 2); null otherwise.</summary>
    internal SelfConditionedDenoiser? NewSelfConditionedDenoiser(Precision precision = Precision.Fp32) =>
        Config.SelfConditioning ? SelfConditioning.Denoiser(NetworkIn(precision), _schedule, Config.Prediction) : null;

    private Func<Tensor, Tensor, Tensor> DenoiserFor(SelfConditionedDenoiser? selfConditioned, Precision precision = Precision.Fp32) =>
        selfConditioned is null ? NetworkIn(precision) : selfConditioned.Denoise;

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
        lock (_lowPrecisionLock)
        {
            if (_disposed) return;
            _disposed = true;
            _bf16?.Dispose();
        }
        if (_ownsNetwork) _network.Dispose();
    }
}
