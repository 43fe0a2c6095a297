using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion;
using Microsoft.ML.Diffusion.Conditions;
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
    private readonly bool _ownsAutoencoder;
    private readonly object _lowPrecisionLock = new();
    private LowPrecisionCopy? _bf16;                       // made on first bfloat16 use (SamplerOptions.Precision)
    private Onnx.OnnxRuntimeNetwork? _onnx;                 // made on first ONNX Runtime use (SamplerOptions.Engine)
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
        NetworkForward = (x, t, y) => _network.forward(x, t, y);
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
        return new DiffusionModel(_host, Config with { DefaultSampler = SamplerSettings.From(sampler) }, _network, _device, ownsNetwork: false, sampler,
            autoencoder: Autoencoder, ownsAutoencoder: false);
    }

    /// <summary>Throws unless this model can sample with <paramref name="sampler"/>: its settings (<see cref="SamplerOptions.Validate"/>),
    /// guidance (a class-conditional model), the classifier (made for this model) and the engine (float32 on ONNX Runtime).</summary>
    internal void CheckSampler(SamplerOptions sampler)
    {
        ArgumentNullException.ThrowIfNull(sampler);
        sampler.Validate(Timesteps);
        SamplerRegistry.CheckObjective(SamplerRegistry.Get(sampler.Sampler, nameof(sampler)), Config.Objective, nameof(sampler));
        CheckGuidance(sampler);
        sampler.Classifier?.CheckCompatible(this);
        CheckEngine(sampler);
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
        return SampleInBatches(seeds, options ?? DefaultSampler, initialNoise: null);
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
        return SampleInBatches(seeds, options, initialNoise: null, classes: ClassIndices(labels, options));
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
        return SampleInBatches(seeds, options, initialNoise: null, upsampled, lowResolution: low);
    }

    /// <summary>The shape of one sample the network denoises: [C, S, S] in pixel space, [LatentChannels, S/f, S/f] for a latent model.</summary>
    internal long[] SampleShape => new long[] { Config.SampleChannels, Config.SampleSize, Config.SampleSize };

    /// <summary>The sampler options as sampling uses them: a latent model neither clips nor thresholds x_0 (latents are not
    /// bounded to [-1, 1]; LDM samples with clip_sample off); a pixel-space model uses them as they are.</summary>
    internal SamplerOptions ForSampling(SamplerOptions options)
    {
        if (Latent is null || (!options.ClipSample && !options.DynamicThresholding)) return options;
        var copy = options.Clone();
        copy.ClipSample = false;
        copy.DynamicThresholding = false;
        return copy;
    }

    /// <summary>
    /// Throws when classifier guidance (<see cref="SamplerOptions.Classifier"/>) cannot run: the classifier does not fit this model
    /// (schedule, T, size, channels, latent model), no labels were given, or a label is outside the classifier's classes (a missing
    /// key included).
    /// </summary>
    private void CheckClassifier(SamplerOptions options, long[]? classes)
    {
        if (options.Classifier is not { } classifier) return;
        classifier.CheckCompatible(this);
        if (classes is null)
            throw new ArgumentException(
                "SamplerOptions.Classifier is set, but no class labels were given; classifier guidance steers towards a label: use " +
                "Generate(labels, options), GenerateTensor(seeds, labels, options), or requests with a label column (CreateRequests(count, seed, labels)).",
                nameof(options));
        for (int i = 0; i < classes.Length; i++)
        {
            if (classes[i] < 0 || classes[i] >= classifier.NumClasses)
                throw new ArgumentOutOfRangeException(nameof(options), classes[i],
                    $"Label {(classes[i] == NumClasses && NumClasses > 0 ? "'none' (a missing key)" : classes[i].ToString())} of image {i} is outside " +
                    $"SamplerOptions.Classifier's classes; expected 0..{classifier.NumClasses - 1}.");
        }
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

    /// <summary>Throws when guidance is asked of a model without class conditioning.</summary>
    private void CheckGuidance(SamplerOptions options)
    {
        if (NumClasses == 0 && options.GuidanceScale != 1f)
            throw new ArgumentException(
                $"SamplerOptions.GuidanceScale is {options.GuidanceScale}; classifier-free guidance needs a class-conditional model " +
                "(trained with DiffusionTrainer.Options.LabelColumnName). Leave it at 1 for this model.", nameof(options));
    }

    /// <summary>Throws the error of a model that cannot generate from noise alone (a super-resolution model).</summary>
    private void CheckGenerates()
    {
        if (Config.Conditioning is { } c)
            throw new InvalidOperationException(
                $"This diffusion model is a super-resolution model (Conditioning {c}): it needs a low-resolution input image of " +
                $"{c.LowResolutionSize(ImageSize)}x{c.LowResolutionSize(ImageSize)} pixels and cannot generate from noise alone; " +
                "use mlContext.Generative.Upscale with it.");
    }

    /// <summary>
    /// The batching loop of <see cref="GenerateTensor(IReadOnlyList{uint}, SamplerOptions?)"/> and <see cref="Interpolate"/>: batches of
    /// <see cref="SamplerOptions.BatchSize"/> images, each with a fresh scheduler and self-conditioning state, so an image
    /// does not depend on the batch it is in. <paramref name="initialNoise"/> [count, C, H, W], when given, replaces the
    /// per-seed x_T. <paramref name="conditionChannels"/> [count, Cc, H, W], when given, is appended to the network's input
    /// (<see cref="ConditionedNetwork"/>). <paramref name="classes"/> (class indices, <see cref="NumClasses"/> = the null label)
    /// are the class labels of a class-conditional model, guided by <see cref="SamplerOptions.GuidanceScale"/>; null samples
    /// with the null label. <paramref name="lowResolution"/> [count, C, S/f, S/f] is the low-resolution image of a super-resolution
    /// model, which <see cref="InferenceEngine.OnnxRuntime"/> hands to the graph instead of <paramref name="conditionChannels"/>.
    /// <paramref name="initialImages"/> [count, C, S, S] (pixels in [-1, 1], CPU), when given, are SDEdit's inputs (Meng et al. 2022):
    /// each batch's images (encoded first by a latent model, z = s E(x)) are noised to loop position <paramref name="startStep"/> times
    /// the scheduler's order and denoised from there (<see cref="DiffusionSampler.Sample"/>).
    /// Returns x_0 [count, C, H, W] on the CPU.
    /// </summary>
    internal Tensor SampleInBatches(IReadOnlyList<uint> seeds, SamplerOptions options, Tensor? initialNoise, Tensor? conditionChannels = null,
        long[]? classes = null, Tensor? lowResolution = null, Tensor? initialImages = null, int startStep = 0)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        options.Validate(Timesteps);
        if (seeds.Count == 0) throw new ArgumentException("At least one seed is needed.", nameof(seeds));
        if (conditionChannels is null && lowResolution is null) CheckGenerates();
        CheckGuidance(options);
        if (classes is not null && classes.Length != seeds.Count)
            throw new ArgumentException($"There are {classes.Length} labels for {seeds.Count} seeds; expected one label per seed.", nameof(classes));
        CheckClassifier(options, classes);
        CheckEngine(options);
        var onnx = options.Engine == InferenceEngine.OnnxRuntime ? OnnxNetwork() : null;
        if (onnx is not null && Config.Conditioning is not null && lowResolution is null)
            throw new InvalidOperationException("The ONNX Runtime engine needs the low-resolution images of a super-resolution model, not their upsampling.");
        options = ForSampling(options);
        var shape = SampleShape;
        int batches = (seeds.Count + options.BatchSize - 1) / options.BatchSize;
        var parts = new List<Tensor>();
        try
        {
            for (int b = 0; b < batches; b++)
            {
                int start = b * options.BatchSize, n = Math.Min(options.BatchSize, seeds.Count - start);
                var chunk = seeds.Skip(start).Take(n).ToArray();
                var scheduler = SchedulerFactory.Create(_schedule, options, Config.Prediction, Config.Variance, Config.Objective);
                try
                {
                    using var noise = initialNoise?.narrow(0, start, n);
                    using var labels = classes is null ? null : tensor(classes.AsSpan(start, n).ToArray(), dtype: int64);
                    // The network sees the labels only when class-conditional; an unconditional model takes them for the classifier alone.
                    var networkLabels = NumClasses > 0 ? labels : null;
                    // ONNX Runtime takes the conditions as separate graph inputs (bound once per batch); TorchSharp as appended channels.
                    using var channels = onnx is null ? conditionChannels?.narrow(0, start, n) : lowResolution?.narrow(0, start, n);
                    using var network = onnx is null
                        ? new ConditionedNetwork(NetworkIn(options), channels, _device, networkLabels, options.GuidanceScale, NumClasses, Channels)
                        : ConditionedNetwork.WithSeparateInputs(onnx.Forward, channels, _device, networkLabels, options.GuidanceScale, NumClasses, Channels);
                    using var selfConditioned = NewSelfConditionedDenoiser(network.Forward);
                    using var classifierLabels = options.Classifier is null ? null : labels!.to(_device, copy: true);
                    var guidance = options.Classifier is { } classifier
                        ? new ClassifierGuidance((x, t) => classifier.LogProbabilityGradient(x, t, classifierLabels!), options.ClassifierScale, Config.Prediction)
                        : null;
                    using var images = initialImages?.narrow(0, start, n);
                    using var sdeditX0 = images is null ? null : Latent is { } space ? LatentScale.ToLatent(Autoencoder!, images, space.ScaleFactor) : images.alias();
                    int startIndex = sdeditX0 is null ? 0 : SdeditSchedule.StartIndex(startStep, scheduler.Order, scheduler.Timesteps.Count);
                    var x0 = DiffusionSampler.Sample(selfConditioned is null ? network.Forward : selfConditioned.Denoise, scheduler, chunk, shape, _device,
                        options.Progress, options.CancellationToken, b, batches, noise, guidance, sdeditX0, startIndex);
                    parts.Add(x0);
                    if (Latent is { } latent)
                    {
                        // LDM: x = D(z / s), decoded batch by batch (by the exported decoder on ONNX Runtime).
                        parts[^1] = LatentScale.ToImage(Autoencoder!, x0, latent.ScaleFactor, options.Engine);
                        x0.Dispose();
                    }
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
        var probe = SchedulerFactory.Create(_schedule, options, Config.Prediction, Config.Variance, Config.Objective);
        if (probe.NeedsNoise)
        {
            throw new ArgumentException(
                $"Interpolate needs a deterministic sampler (DDIM with Eta = 0, DPM-Solver++, Euler or Heun); {SamplerRegistry.Get(options.Sampler).DisplayName}" +
                (options.Eta > 0 ? $" with Eta = {options.Eta}" : string.Empty) +
                " adds fresh noise at every step, so the images would not follow the interpolated starting noise.", nameof(options));
        }

        (probe as IDisposable)?.Dispose();
        using var noise = SlerpNoise(seedA, seedB, count, SampleShape);
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

    /// <summary>Bgra32 pixels of the images for <paramref name="seeds"/> (with class indices <paramref name="classes"/>, or null).</summary>
    internal byte[][] GeneratePixels(IReadOnlyList<uint> seeds, long[]? classes, SamplerOptions options)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var images = SampleInBatches(seeds, options, initialNoise: null, classes: classes);
        return ImageTensorConverter.ToBgraPixels(images);
    }

    /// <summary>The network call (input, t, class labels or null) -> output. Tests replace it with a counting double; defaults to the U-Net.</summary>
    internal Func<Tensor, Tensor, Tensor?, Tensor> NetworkForward { get; set; }

    /// <summary>The network call (x_t, t, labels) in <paramref name="precision"/>: <see cref="NetworkForward"/> for float32, the
    /// bfloat16 copy of the weights for <see cref="Precision.Bf16Mixed"/>; its output is float32 either way.</summary>
    private Func<Tensor, Tensor, Tensor?, Tensor> NetworkIn(Precision precision)
    {
        if (precision == Precision.Fp32) return NetworkForward;
        lock (_lowPrecisionLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _bf16 ??= new LowPrecisionCopy(_network, bfloat16);
            return _bf16.Forward;
        }
    }

    /// <summary>The network call of <paramref name="options"/>: <see cref="NetworkIn(Precision)"/> on TorchSharp, or this model's
    /// ONNX Runtime session (exported and opened on first use, then reused) for <see cref="InferenceEngine.OnnxRuntime"/>.</summary>
    private Func<Tensor, Tensor, Tensor?, Tensor> NetworkIn(SamplerOptions options)
    {
        if (options.Engine != InferenceEngine.OnnxRuntime) return NetworkIn(options.Precision);
        CheckEngine(options);
        return OnnxNetwork().Forward;
    }

    /// <summary>This model's ONNX Runtime session on the in-memory export of the network, made on first use and reused by every
    /// batch and thread.</summary>
    internal Onnx.OnnxRuntimeNetwork OnnxNetwork()
    {
        lock (_lowPrecisionLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_onnx is null)
            {
                using var stream = new MemoryStream();
                Onnx.UNetOnnxExporter.Export(_network, Config, stream);
                _onnx = new Onnx.OnnxRuntimeNetwork(stream.ToArray(), Config.Network, _host);
            }
            return _onnx;
        }
    }

    /// <summary>True once this model's ONNX Runtime session has been opened (<see cref="OnnxNetwork"/>).</summary>
    internal bool OnnxNetworkOpened
    {
        get
        {
            lock (_lowPrecisionLock) return _onnx is not null;
        }
    }

    /// <summary>Throws <see cref="NotSupportedException"/> naming what <see cref="InferenceEngine.OnnxRuntime"/> does not cover
    /// (bfloat16 precision); nothing for <see cref="InferenceEngine.TorchSharp"/>.</summary>
    private static void CheckEngine(SamplerOptions options)
    {
        if (options.Engine != InferenceEngine.OnnxRuntime) return;
        if (options.Precision != Precision.Fp32)
            throw new NotSupportedException($"SamplerOptions.Engine = InferenceEngine.OnnxRuntime runs the float32 network; Precision {options.Precision} " +
                "needs InferenceEngine.TorchSharp.");
    }

    /// <summary>For a self-conditioned model (<see cref="DiffusionModelConfig.SelfConditioning"/>), a new per-batch denoiser that feeds
    /// <paramref name="network"/> (x_t, t, x0_hat) the previous step's x_0 estimate (Analog Bits, algorithm 2); null otherwise.</summary>
    internal SelfConditionedDenoiser? NewSelfConditionedDenoiser(Func<Tensor, Tensor, Tensor, Tensor> network) =>
        Config.SelfConditioning ? SelfConditioning.Denoiser(network, _schedule, Config.Prediction) : null;

    /// <summary>
    /// The denoiser of one sampling batch for other loops (RePaint): the network, wrapped for self-conditioning when the model
    /// uses it. <paramref name="network"/> replaces the network (tests pass a counting double). Dispose the state after the batch.
    /// </summary>
    internal (Func<Tensor, Tensor, Tensor> Denoise, IDisposable? State) NewBatchDenoiser(Func<Tensor, Tensor, Tensor>? network = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var net = network ?? ((x, t) => NetworkForward(x, t, null));   // no class label (the null class of a class-conditional model)
        if (!Config.SelfConditioning) return (net, null);
        var selfConditioned = SelfConditioning.Denoiser(net, _schedule, Config.Prediction);
        return (selfConditioned.Denoise, selfConditioned);
    }

    // ---- ITransformer ----

    /// <summary>Always true: the model maps each row on its own (a PredictionEngine works).</summary>
    public bool IsRowToRowMapper => true;

    /// <summary>The input schema plus the output image column (ImageDataViewType ImageSize x ImageSize).</summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        CheckSeedColumn(inputSchema);
        CheckLabelColumn(inputSchema);
        return ImageMapping.OutputSchema(inputSchema, OutputColumnName, ImageSize);
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

    /// <summary>
    /// The class-label column of a class-conditional model when the input has it (else null: the null label for every row);
    /// throws when its type is not a key or integer, or when requests made with labels
    /// (<see cref="GenerativeCatalog.CreateRequests(int, uint, IReadOnlyList{int}, string, string)"/>) reach a model without
    /// class conditioning or carry the labels in another column. With classifier guidance (<see cref="SamplerOptions.Classifier"/>
    /// in the default sampler) an unconditional model reads the requests' label column (or a column named "Label") for the classifier.
    /// </summary>
    internal DataViewSchema.Column? CheckLabelColumn(DataViewSchema schema)
    {
        bool classifier = _defaultSampler.Classifier is not null;
        foreach (var c in schema)
        {
            if (c.IsHidden || c.Annotations.Schema.GetColumnOrNull(LabelColumn.RequestAnnotation) is null) continue;
            if (NumClasses == 0 && classifier)
            {
                // Classifier guidance on an unconditional model: the request labels are the classifier's.
                LabelColumn.CheckType(c.Name, c.Type);
                return c;
            }
            if (NumClasses == 0)
                throw new ArgumentOutOfRangeException(nameof(schema),
                    $"Column '{c.Name}' holds class labels for generation, but this diffusion model has no class conditioning " +
                    "(trained without DiffusionTrainer.Options.LabelColumnName); make the requests without labels, or set SamplerOptions.Classifier " +
                    "(classifier guidance) with WithSampler.");
            if (c.Name != LabelColumnName)
                throw new ArgumentOutOfRangeException(nameof(schema),
                    $"Column '{c.Name}' holds class labels for generation, but this model reads them from column '{LabelColumnName}'; " +
                    $"pass labelColumnName: \"{LabelColumnName}\" to CreateRequests.");
        }
        if (NumClasses == 0 && classifier)
        {
            // No annotated request column: a plain column named like the trainer's default label column carries the labels.
            var plain = schema.GetColumnOrNull(DiffusionDefaults.LabelColumnName);
            if (plain is { } p) LabelColumn.CheckType(p.Name, p.Type);
            return plain;
        }
        if (NumClasses == 0 || LabelColumnName is null) return null;
        var col = schema.GetColumnOrNull(LabelColumnName);
        if (col is { } label) LabelColumn.CheckType(label.Name, label.Type);
        return col;
    }

    /// <summary>Lazily adds the generated images; rows are generated in batches of the sampler's BatchSize.</summary>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckGenerates();
        return new BatchMappingDataView<GenerationRequest, byte[]>(new GenerationMapper(this), input, GetOutputSchema(input.Schema));
    }

    /// <summary>A row-to-row mapper (one image per row, batch of one) for PredictionEngine.</summary>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        CheckGenerates();
        return new BatchMappingRowMapper<GenerationRequest, byte[]>(new GenerationMapper(this), inputSchema, GetOutputSchema(inputSchema));
    }

    // ---- persistence ----

    /// <summary>
    /// Writes the denoising network as a standard ONNX model (opset 17, dynamic batch dimension) to <paramref name="path"/>;
    /// see <see cref="ExportOnnx(Stream)"/>. Written through a temporary file: a failed export leaves no partial file.
    /// </summary>
    /// <param name="path">The .onnx file to create or overwrite.</param>
    public void ExportOnnx(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Onnx.OnnxModelFile.Write(path, ExportOnnx);
    }

    /// <summary>
    /// Writes the denoising network as a standard ONNX model (opset 17, dynamic batch dimension, weights as initializers) to
    /// <paramref name="stream"/>; the scheduler loop stays with the caller (the library's own <see cref="InferenceEngine.OnnxRuntime"/>
    /// runs this graph). Inputs, B being the batch:
    /// <list type="bullet">
    /// <item><c>x_t</c> float32 [B, C, S, S]: the noisy sample; C, S are <see cref="Channels"/>, <see cref="ImageSize"/>, or for a
    /// latent model the latent channels and ImageSize / factor (<see cref="Latent"/>).</item>
    /// <item><c>t</c> float32 [B]: timesteps in 0..T-1; fractional ones are allowed (continuous-time samplers such as EulerKarras).</item>
    /// <item><c>class_labels</c> int64 [B], class-conditional models only: 0..NumClasses - 1, or NumClasses for the null label of
    /// classifier-free guidance.</item>
    /// <item><c>self_condition</c> float32 [B, C, S, S], self-conditioned models only (<see cref="DiffusionModelConfig.SelfConditioning"/>):
    /// the previous step's x_0 estimate clamped to [-1, 1], zeros at the first step.</item>
    /// <item><c>low_resolution</c> float32 [B, Channels, S/f, S/f], super-resolution models only (<see cref="Conditioning"/>): the
    /// low-resolution image in [-1, 1]; the graph upsamples it (bicubic) as training did.</item>
    /// </list>
    /// Output: <c>prediction</c> float32 [B, OutChannels, S, S], what the network predicts (<see cref="DiffusionModelConfig.Prediction"/>;
    /// with learned variance the 2 C channels of the network). The metadata (metadata_props) holds <see cref="Config"/> as JSON under
    /// <c>diffusion_model_config</c>, <c>model_kind</c> = <c>diffusion_unet</c>, <c>timestep_type</c> = <c>float32</c>, and the
    /// schedule, T, prediction and variance type, image size and channels, sample size and channels, class count, self-conditioning,
    /// conditioning and, for a latent model, the latent factor, channels and scale factor s under their own keys. A latent model's
    /// images are D(z / s): export the decoder with <see cref="AutoencoderModel.ExportDecoderOnnx(Stream)"/> of <see cref="Autoencoder"/>.
    /// </summary>
    /// <param name="stream">A writable stream; it is left open.</param>
    public void ExportOnnx(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Onnx.UNetOnnxExporter.Export(_network, Config, stream);
    }

    void ICanSaveModel.Save(ModelSaveContext ctx) => DiffusionModelFormat.Save(ctx, Config, _network, Autoencoder);

    private static DiffusionModel Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        var (config, network, autoencoder) = DiffusionModelFormat.Load(env, ctx);
        return new DiffusionModel(env, config, network, DeviceSelection.Select(env), autoencoder: autoencoder, ownsAutoencoder: true);
    }

    /// <summary>Frees the network's native memory, its bfloat16 copy and its ONNX Runtime session, if they were made (models made by <see cref="WithSampler"/> share the network and free only their own copy).</summary>
    public void Dispose()
    {
        lock (_lowPrecisionLock)
        {
            if (_disposed) return;
            _disposed = true;
            _bf16?.Dispose();
            _onnx?.Dispose();
        }
        if (_ownsNetwork) _network.Dispose();
        if (_ownsAutoencoder) Autoencoder?.Dispose();
    }
}
