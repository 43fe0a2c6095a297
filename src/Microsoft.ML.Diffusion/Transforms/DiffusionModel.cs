using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion;
using Microsoft.ML.Diffusion.Conditions;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Transforms;

[assembly: LoadableClass(typeof(DiffusionModel), null, typeof(SignatureLoadModel),
    "Diffusion Model", DiffusionModel.LoaderSignature)]

namespace Microsoft.ML.Diffusion;

/// <summary>
/// A trained diffusion model: an <see cref="ITransformer"/> that adds one generated image per input row
/// (row i's noise comes from its Seed column, or from the default seed + i when the input has none), and
/// <see cref="Generate(int, SamplerOptions?)"/> for direct use. Saved and loaded with mlContext.Model, weights included.
/// </summary>
public sealed partial class DiffusionModel : ITransformer, ICanSaveModel, IDisposable
{
    internal const string LoaderSignature = "DiffusionModel";
    private readonly IHost _host;
    private readonly UNet _network;
    private readonly DiffusionSchedule _schedule;
    private readonly Device _device;
    private readonly bool _ownsNetwork;
    private readonly SamplerOptions _defaultSampler;
    private readonly bool _ownsAutoencoder;
    private readonly object _disposeLock = new();
    private bool _disposed;

    internal DiffusionModel(IHostEnvironment env, DiffusionModelConfig config, UNet network, Device device, bool ownsNetwork = true,
        SamplerOptions? sampler = null, AutoencoderModel? autoencoder = null, bool ownsAutoencoder = false)
    {
        if ((config.Latent is null) != (autoencoder is null))
            throw new ArgumentException(config.Latent is null
                ? "A pixel-space diffusion model takes no autoencoder."
                : "A latent diffusion model needs its autoencoder.", nameof(autoencoder));
        Autoencoder = autoencoder;
        _ownsAutoencoder = ownsAutoencoder;
        _ownsNetwork = ownsNetwork;
        _host = env.Register(nameof(DiffusionModel));
        Config = config;
        _network = network;
        _device = device;
        _network.to(device);
        _network.eval();
        _schedule = config.CreateSchedule();
        _defaultSampler = sampler?.Clone() ?? config.DefaultSampler.ToOptions();
        Pipeline = new SamplingPipeline(_host, config, network, _schedule, device, autoencoder);
    }

    /// <summary>The sampling pipeline: checks, the denoiser of each batch, the batched loop (generation, interpolation,
    /// super-resolution, image-to-image; RePaint's denoiser).</summary>
    internal SamplingPipeline Pipeline { get; }

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

    /// <summary>The image conditioning the model was trained with (<see cref="Diffusion.Conditioning.LowResolution"/>: a
    /// super-resolution model, which upscales and cannot generate from noise alone); null for an unconditional model.</summary>
    public Conditioning? Conditioning => Config.Conditioning;

    /// <summary>The autoencoder of a latent diffusion model (<see cref="DiffusionTrainer.Options.Autoencoder"/>): the network
    /// denoises its scaled latents and every sampler decodes at the end; null for a pixel-space model.</summary>
    public AutoencoderModel? Autoencoder { get; }

    /// <summary>The latent space (factor, latent channels, scale factor) of a latent diffusion model; null in pixel space.</summary>
    public LatentSpace? Latent => Config.Latent;

    /// <summary>Classes of a class-conditional model (trained with <see cref="DiffusionTrainer.Options.LabelColumnName"/>);
    /// 0 for a model without class conditioning.</summary>
    public int NumClasses => Config.Network.NumClasses;

    /// <summary>The class-label column <see cref="Transform"/> reads (null without class conditioning).</summary>
    public string? LabelColumnName => Config.LabelColumnName;

    /// <summary>The network's parameter count.</summary>
    public long ParameterCount => _network.ParameterCount;

    /// <summary>The noise schedule.</summary>
    internal DiffusionSchedule Schedule => _schedule;

    /// <summary>The device the network runs on.</summary>
    public Device Device => _device;

    internal UNet Network => _network;

    /// <summary>
    /// A model sharing these weights whose <see cref="Transform"/> (and PredictionEngine) uses <paramref name="sampler"/>,
    /// including its <see cref="SamplerOptions.CancellationToken"/> and <see cref="SamplerOptions.Progress"/> (which are not saved).
    /// </summary>
    public DiffusionModel WithSampler(SamplerOptions sampler)
    {
        CheckSampler(sampler);
        return new DiffusionModel(_host, Config with { DefaultSampler = sampler.ToSettings() }, _network, _device, ownsNetwork: false, sampler,
            autoencoder: Autoencoder, ownsAutoencoder: false);
    }

    /// <summary>Throws unless this model can sample with <paramref name="sampler"/>: its settings (<see cref="SamplerOptions.Validate"/>),
    /// guidance (a class-conditional model), the classifier (made for this model) and the engine (float32 on ONNX Runtime).</summary>
    internal void CheckSampler(SamplerOptions sampler) => Pipeline.Check(sampler);

    /// <summary>
    /// Generates <paramref name="count"/> images; image i uses seed <c>options.Seed + i</c>, so the result equals
    /// <c>Transform(mlContext.Generative.CreateRequests(count, options.Seed))</c>.
    /// </summary>
    public IReadOnlyList<MLImage> Generate(int count, SamplerOptions? options = null)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), count, "count must be >= 1.");
        options ??= DefaultSampler;
        var seeds = Enumerable.Range(0, count).Select(i => SeedOfRow(options, i)).ToArray();
        return GeneratePixels(seeds, null, options)
            .Select(p => MLImage.CreateFromPixels(ImageSize, ImageSize, MLPixelFormat.Bgra32, p)).ToArray();
    }

    /// <summary>
    /// Generates one image of each class in <paramref name="labels"/> (class indices 0..<see cref="NumClasses"/> - 1) with a
    /// class-conditional model, or with any model when <see cref="SamplerOptions.Classifier"/> is set (classifier guidance; labels
    /// 0..the classifier's classes - 1); image i uses seed <c>options.Seed + i</c> and <see cref="SamplerOptions.GuidanceScale"/>
    /// (classifier-free guidance), so the result equals <c>Transform(mlContext.Generative.CreateRequests(labels.Count,
    /// options.Seed, labels))</c> on a model made by <see cref="WithSampler"/> with the same options.
    /// </summary>
    /// <exception cref="InvalidOperationException">The model has no class conditioning and no classifier is set.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A label is outside the model's (or the classifier's) classes.</exception>
    public IReadOnlyList<MLImage> Generate(IReadOnlyList<int> labels, SamplerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(labels);
        if (labels.Count < 1) throw new ArgumentOutOfRangeException(nameof(labels), labels.Count, "At least one label is needed.");
        options ??= DefaultSampler;
        var classes = ClassIndices(labels, options);
        var seeds = Enumerable.Range(0, labels.Count).Select(i => SeedOfRow(options, i)).ToArray();
        return GeneratePixels(seeds, classes, options)
            .Select(p => MLImage.CreateFromPixels(ImageSize, ImageSize, MLPixelFormat.Bgra32, p)).ToArray();
    }

    /// <summary>Checks labels against the model's classes (and the classifier's, with classifier guidance) and returns them as class indices.</summary>
    private long[] ClassIndices(IReadOnlyList<int> labels, SamplerOptions options)
    {
        if (NumClasses == 0 && options.Classifier is null)
            throw new InvalidOperationException(
                "This diffusion model has no class conditioning (it was trained without DiffusionTrainer.Options.LabelColumnName); it takes no labels " +
                "unless SamplerOptions.Classifier is set (classifier guidance).");
        int classCount = RequestClassCount(options);
        var classes = new long[labels.Count];
        for (int i = 0; i < labels.Count; i++)
        {
            if (labels[i] < 0 || labels[i] >= classCount)
                throw new ArgumentOutOfRangeException(nameof(labels), labels[i],
                    $"Label {labels[i]} (index {i}) is outside the {(NumClasses > 0 ? "model's" : "classifier's")} classes; expected 0..{classCount - 1}.");
            classes[i] = labels[i];
        }
        return classes;
    }

    /// <summary>The number of classes generation requests may ask for: the model's when class-conditional, else the classifier's
    /// (<see cref="SamplerOptions.Classifier"/>); 0 when neither.</summary>
    internal int RequestClassCount(SamplerOptions options) => NumClasses > 0 ? NumClasses : options.Classifier?.NumClasses ?? 0;

    /// <summary>The seed of row <paramref name="row"/> when no seed column gives one: <c>options.Seed + row</c> (wrapping).</summary>
    internal static uint SeedOfRow(SamplerOptions options, long row) => unchecked(options.Seed + (uint)row);

    /// <summary>Generates and returns images as a float tensor [count, C, H, W] in [-1, 1] on the CPU.</summary>
    public Tensor GenerateTensor(IReadOnlyList<uint> seeds, SamplerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(seeds);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Pipeline.Run(new SamplingRequest(seeds, options ?? DefaultSampler));
    }

    /// <summary>Generates image i of class <paramref name="labels"/>[i] from seed <paramref name="seeds"/>[i] with a
    /// class-conditional model, as a float tensor [count, C, H, W] in [-1, 1] on the CPU (see <see cref="Generate(IReadOnlyList{int}, SamplerOptions?)"/>).</summary>
    public Tensor GenerateTensor(IReadOnlyList<uint> seeds, IReadOnlyList<int> labels, SamplerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(seeds);
        ArgumentNullException.ThrowIfNull(labels);
        if (labels.Count != seeds.Count)
            throw new ArgumentException($"There are {labels.Count} labels for {seeds.Count} seeds; expected one label per seed.", nameof(labels));
        options ??= DefaultSampler;
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Pipeline.Run(new SamplingRequest(seeds, options) { Classes = ClassIndices(labels, options) });
    }

    /// <summary>
    /// Conditional super-resolution (SR3, Saharia et al. 2021) with a model trained with
    /// <see cref="Diffusion.Conditioning.LowResolution"/>: image i is sampled from seed <paramref name="seeds"/>[i] with the
    /// bicubic upsampling of <paramref name="lowResolution"/>[i] (clamped to [-1, 1]) as the network's extra input channels,
    /// through the same batching loop, samplers and self-conditioning as generation.
    /// </summary>
    /// <param name="lowResolution">[N, C, S/f, S/f] float in [-1, 1] on the CPU, N = seeds.Count, S = ImageSize, f = the factor.</param>
    /// <param name="seeds">One seed per image (its x_T and per-step noise).</param>
    /// <param name="options">The sampler; null uses <see cref="DefaultSampler"/>.</param>
    /// <returns>[N, C, S, S] in [-1, 1] on the CPU.</returns>
    internal Tensor SampleSuperResolution(Tensor lowResolution, IReadOnlyList<uint> seeds, SamplerOptions? options)
    {
        ArgumentNullException.ThrowIfNull(lowResolution);
        ArgumentNullException.ThrowIfNull(seeds);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Config.Conditioning is not { Kind: ConditioningKind.LowResolution } c)
            throw new InvalidOperationException(
                "This diffusion model was not trained for super-resolution (DiffusionTrainer.Options.Conditioning = Conditioning.LowResolution(factor)); " +
                "it has no low-resolution input.");
        if (seeds.Count == 0) throw new ArgumentException("At least one seed is needed.", nameof(seeds));
        int small = c.LowResolutionSize(ImageSize);
        var expected = new long[] { seeds.Count, Channels, small, small };
        if (!lowResolution.shape.SequenceEqual(expected))
            throw new ArgumentException(
                $"The low-resolution images have shape [{string.Join(", ", lowResolution.shape)}]; this model ({Channels}x{ImageSize}x{ImageSize}, " +
                $"Conditioning {c}) expects [N, {Channels}, {small}, {small}] with N = {seeds.Count} (one per seed).", nameof(lowResolution));
        options ??= DefaultSampler;
        // TorchSharp appends the upsampled image to the network's input; the ONNX graph takes the low-resolution image itself.
        using var low = lowResolution.to_type(float32);
        using var upsampled = options.Engine == InferenceEngine.OnnxRuntime ? null : LowResolutionCondition.Upsample(low, ImageSize);
        return Pipeline.Run(new SamplingRequest(seeds, options) { ConditionChannels = upsampled, LowResolution = low });
    }

    /// <summary>The training objective (<see cref="DiffusionTrainer.Options.Objective"/>): which samplers apply.</summary>
    public DiffusionObjective Objective => Config.Objective;

    /// <summary>Throws <see cref="NotSupportedException"/> naming <paramref name="feature"/> when this is a flow-matching model.</summary>
    internal void RequireDdpmObjective(string feature)
    {
        if (Config.Objective != DiffusionObjective.Ddpm)
            throw new NotSupportedException(
                $"{feature} is not supported for a model trained with DiffusionObjective.{Config.Objective} (DiffusionTrainer.Options.Objective); " +
                "it needs a DDPM-objective model.");
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
        var probe = SchedulerFactory.Create(_schedule, options, Config.Prediction, Config.Variance, Config.Objective);
        if (probe.NeedsNoise)
        {
            throw new ArgumentException(
                $"Interpolate needs a deterministic sampler (DDIM with Eta = 0, DPM-Solver++, Euler or Heun); {SamplerRegistry.Get(options.Sampler).DisplayName}" +
                (options.Eta > 0 ? $" with Eta = {options.Eta}" : string.Empty) +
                " adds fresh noise at every step, so the images would not follow the interpolated starting noise.", nameof(options));
        }

        (probe as IDisposable)?.Dispose();
        using var noise = SlerpNoise(seedA, seedB, count, Pipeline.SampleShape);
        var seeds = Enumerable.Repeat(seedA, count).ToArray();      // unused: the sampler draws no noise
        using var x0 = Pipeline.Run(new SamplingRequest(seeds, options) { InitialNoise = noise });
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

    /// <summary>Bgra32 pixels of the images for <paramref name="seeds"/> (with class indices <paramref name="classes"/>, or null).</summary>
    internal byte[][] GeneratePixels(IReadOnlyList<uint> seeds, long[]? classes, SamplerOptions options)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var images = Pipeline.Run(new SamplingRequest(seeds, options) { Classes = classes });
        return ImageTensorConverter.ToBgraPixels(images);
    }

    // ---- persistence ----

    void ICanSaveModel.Save(ModelSaveContext ctx) => DiffusionModelFormat.Save(ctx, Config, _network, Autoencoder);

    private static DiffusionModel Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        var (config, network, autoencoder) = DiffusionModelFormat.Load(env, ctx);
        return new DiffusionModel(env, config, network, DeviceSelection.Select(env), autoencoder: autoencoder, ownsAutoencoder: true);
    }

    /// <summary>Frees the network's native memory, its bfloat16 copy and its ONNX Runtime session, if they were made (models made by <see cref="WithSampler"/> share the network and free only their own copy).</summary>
    public void Dispose()
    {
        lock (_disposeLock)
        {
            if (_disposed) return;
            _disposed = true;
        }
        Pipeline.Dispose();
        if (_ownsNetwork) _network.Dispose();
        if (_ownsAutoencoder) Autoencoder?.Dispose();
    }
}
