using Microsoft.ML.Diffusion.Conditions;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Onnx;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Sampling;

/// <summary>
/// The one sampling pipeline of a <see cref="DiffusionModel"/>: it checks a request, assembles the denoiser of each batch once
/// (precision, engine, conditioning, classifier-free guidance, self-conditioning, classifier guidance) and runs the batched
/// denoising loop (<see cref="DiffusionSampler"/>) from a start step to an end step, decoding latents at the end. Generation,
/// interpolation, super-resolution and image-to-image are short callers of <see cref="Run"/>; RePaint, whose loop jumps back
/// and forth, takes its per-batch denoiser from <see cref="BatchDenoiser"/>.
/// </summary>
/// <remarks>Owns the lazily made bfloat16 copy of the weights and the ONNX Runtime session, shared by every batch and thread.</remarks>
internal sealed class SamplingPipeline : IDisposable
{
    private readonly IHost _host;
    private readonly DiffusionModelConfig _config;
    private readonly UNet _network;
    private readonly DiffusionSchedule _schedule;
    private readonly Device _device;
    private readonly ILatentCodec? _autoencoder;
    private readonly object _lock = new();
    private LowPrecisionCopy? _bf16;                       // made on first bfloat16 use (SamplerOptions.Precision)
    private OnnxRuntimeNetwork? _onnx;                      // made on first ONNX Runtime use (SamplerOptions.Engine)
    private bool _disposed;

    /// <param name="host">The model's host (ONNX Runtime's GPU request and warnings).</param>
    /// <param name="config">The model's configuration.</param>
    /// <param name="network">The U-Net, on <paramref name="device"/>, in eval mode (borrowed).</param>
    /// <param name="schedule">The model's noise schedule.</param>
    /// <param name="device">Where the network runs.</param>
    /// <param name="autoencoder">A latent model's autoencoder (borrowed); null in pixel space.</param>
    public SamplingPipeline(IHost host, DiffusionModelConfig config, UNet network, DiffusionSchedule schedule, Device device, ILatentCodec? autoencoder)
    {
        _host = host;
        _config = config;
        _network = network;
        _schedule = schedule;
        _device = device;
        _autoencoder = autoencoder;
        NetworkForward = (x, t, y) => _network.forward(x, t, y);
    }

    /// <summary>The network call (input, t, class labels or null) -> output. Tests replace it with a counting double; defaults to the U-Net.</summary>
    public Func<Tensor, Tensor, Tensor?, Tensor> NetworkForward { get; set; }

    private int NumClasses => _config.Network.NumClasses;

    /// <summary>The shape of one sample the network denoises: [C, S, S] in pixel space, [LatentChannels, S/f, S/f] for a latent model.</summary>
    public long[] SampleShape => new long[] { _config.SampleChannels, _config.SampleSize, _config.SampleSize };

    // ---- checks ----

    /// <summary>Throws unless the model can sample with <paramref name="options"/>: its settings, the sampler's objective, guidance
    /// (a class-conditional model), the classifier (made for this model) and the engine (float32 on ONNX Runtime).</summary>
    public void Check(SamplerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(_config.Timesteps);
        SamplerRegistry.CheckObjective(SamplerRegistry.Get(options.Sampler, nameof(options)), _config.Objective, nameof(options));
        CheckGuidance(options);
        options.GuidanceClassifier?.CheckCompatible(_config);
        CheckEngine(options);
    }

    /// <summary>Throws when guidance is asked of a model without class conditioning.</summary>
    private void CheckGuidance(SamplerOptions options)
    {
        if (NumClasses == 0 && options.GuidanceScale != 1f)
            throw new ArgumentException(
                $"SamplerOptions.GuidanceScale is {options.GuidanceScale}; classifier-free guidance needs a class-conditional model " +
                "(trained with DiffusionTrainer.Options.LabelColumnName). Leave it at 1 for this model.", nameof(options));
    }

    /// <summary>
    /// Throws when classifier guidance (<see cref="SamplerOptions.Classifier"/>) cannot run: the classifier does not fit this model
    /// (schedule, T, size, channels, latent model), no labels were given, or a label is outside the classifier's classes (a missing
    /// key included).
    /// </summary>
    private void CheckClassifier(SamplerOptions options, long[]? classes)
    {
        if (options.GuidanceClassifier is not { } classifier) return;
        classifier.CheckCompatible(_config);
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

    /// <summary>Throws <see cref="NotSupportedException"/> naming what <see cref="InferenceEngine.OnnxRuntime"/> does not cover
    /// (bfloat16 precision); nothing for <see cref="InferenceEngine.TorchSharp"/>.</summary>
    public static void CheckEngine(SamplerOptions options)
    {
        if (options.Engine != InferenceEngine.OnnxRuntime) return;
        if (options.Precision != Precision.Fp32)
            throw new NotSupportedException($"SamplerOptions.Engine = InferenceEngine.OnnxRuntime runs the float32 network; Precision {options.Precision} " +
                "needs InferenceEngine.TorchSharp.");
    }

    /// <summary>Throws the error of a model that cannot generate from noise alone (a super-resolution model).</summary>
    public void CheckGenerates()
    {
        if (_config.Conditioning is { } c)
            throw new InvalidOperationException(
                $"This diffusion model is a super-resolution model (Conditioning {c}): it needs a low-resolution input image of " +
                $"{c.LowResolutionSize(_config.ImageSize)}x{c.LowResolutionSize(_config.ImageSize)} pixels and cannot generate from noise alone; " +
                "use mlContext.Generative.Upscale with it.");
    }

    /// <summary>The sampler options as sampling uses them: a latent model neither clips nor thresholds x_0 (latents are not
    /// bounded to [-1, 1]; LDM samples with clip_sample off); a pixel-space model uses them as they are.</summary>
    public SamplerOptions ForSampling(SamplerOptions options)
    {
        if (_config.Latent is null || (!options.ClipSample && !options.DynamicThresholding)) return options;
        var copy = options.Clone();
        copy.ClipSample = false;
        copy.DynamicThresholding = false;
        return copy;
    }

    // ---- the loop ----

    /// <summary>
    /// Samples <paramref name="request"/> in batches of <see cref="SamplerOptions.BatchSize"/> images, each with a fresh scheduler
    /// and self-conditioning state, so an image does not depend on the batch it is in. Returns x_0 [N, C, S, S] on the CPU (decoded
    /// by a latent model), or with <see cref="SamplingRequest.EndStep"/> the sample at that step.
    /// </summary>
    public Tensor Run(SamplingRequest request)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var (seeds, options) = (request.Seeds, request.Options);
        ArgumentNullException.ThrowIfNull(seeds);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(_config.Timesteps);
        if (seeds.Count == 0) throw new ArgumentException("At least one seed is needed.", nameof(request));
        if (request.ConditionChannels is null && request.LowResolution is null) CheckGenerates();
        CheckGuidance(options);
        var classes = request.Classes;
        if (classes is not null && classes.Length != seeds.Count)
            throw new ArgumentException($"There are {classes.Length} labels for {seeds.Count} seeds; expected one label per seed.", nameof(request));
        CheckClassifier(options, classes);
        CheckEngine(options);
        if (request.EndStep is < 0)
            throw new ArgumentOutOfRangeException(nameof(request), request.EndStep, "EndStep must be >= 0 (or null for the whole loop).");
        var onnx = options.Engine == InferenceEngine.OnnxRuntime ? OnnxNetwork() : null;
        if (onnx is not null && _config.Conditioning is not null && request.LowResolution is null)
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
                parts.Add(RunBatch(request, options, onnx, seeds.Skip(start).Take(n).ToArray(), start, b, batches, shape));
            }
            return parts.Count == 1 ? parts[0] : cat(parts, 0);
        }
        finally
        {
            if (parts.Count > 1) foreach (var p in parts) p.Dispose();
        }
    }

    /// <summary>One batch of <see cref="Run"/>: rows start .. start + seeds.Length of the request.</summary>
    private Tensor RunBatch(SamplingRequest request, SamplerOptions options, OnnxRuntimeNetwork? onnx, uint[] seeds, int start, int batch,
        int batches, long[] shape)
    {
        int n = seeds.Length;
        var scheduler = SchedulerFactory.Create(_schedule, options, _config.Prediction, _config.Variance, _config.Objective);
        try
        {
            using var noise = request.InitialNoise?.narrow(0, start, n);
            using var labels = request.Classes is null ? null : tensor(request.Classes.AsSpan(start, n).ToArray(), dtype: int64);
            // The network sees the labels only when class-conditional; an unconditional model takes them for the classifier alone.
            var networkLabels = NumClasses > 0 ? labels : null;
            // ONNX Runtime takes the conditions as separate graph inputs (bound once per batch); TorchSharp as appended channels.
            using var channels = onnx is null ? request.ConditionChannels?.narrow(0, start, n) : request.LowResolution?.narrow(0, start, n);
            using var network = onnx is null
                ? new ConditionedNetwork(NetworkIn(options.Precision), channels, _device, networkLabels, options.GuidanceScale, NumClasses, _config.Channels)
                : ConditionedNetwork.WithSeparateInputs(onnx.Forward, channels, _device, networkLabels, options.GuidanceScale, NumClasses, _config.Channels);
            using var selfConditioned = _config.SelfConditioning ? SelfConditioning.Denoiser((Func<Tensor, Tensor, Tensor, Tensor>)network.Forward, _schedule, _config.Prediction) : null;
            using var classifierLabels = options.GuidanceClassifier is null ? null : labels!.to(_device, copy: true);
            var guidance = options.GuidanceClassifier is { } classifier
                ? new ClassifierGuidance((x, t) => classifier.LogProbabilityGradient(x, t, classifierLabels!), options.ClassifierScale, _config.Prediction)
                : null;
            using var images = request.InitialImages?.narrow(0, start, n);
            using var sdeditX0 = images is null ? null
                : _config.Latent is { } space ? LatentCodec.ToLatent(_autoencoder!, images, space.ScaleFactor) : images.alias();
            int loopLength = scheduler.Timesteps.Count;
            int startIndex = sdeditX0 is null ? 0 : SdeditSchedule.StartIndex(request.StartStep, scheduler.Order, loopLength);
            int endIndex = request.EndStep is int endStep ? Math.Max(startIndex, SdeditSchedule.StartIndex(endStep, scheduler.Order, loopLength)) : loopLength;
            var x = DiffusionSampler.Sample(selfConditioned is null ? network.Forward : selfConditioned.Denoise, scheduler, seeds, shape, _device,
                options.Progress, options.CancellationToken, batch, batches, noise, guidance, sdeditX0, startIndex, endIndex);
            if (_config.Latent is not { } latent || endIndex < loopLength) return x;
            // LDM: x = D(z / s), decoded batch by batch (by the exported decoder on ONNX Runtime).
            using (x) return LatentCodec.ToImage(_autoencoder!, x, latent.ScaleFactor, options.Engine);
        }
        finally
        {
            (scheduler as IDisposable)?.Dispose();
        }
    }

    // ---- the network ----

    /// <summary>The network call (x_t, t, labels) in <paramref name="precision"/>: <see cref="NetworkForward"/> for float32, the
    /// bfloat16 copy of the weights for <see cref="Precision.Bf16Mixed"/>; its output is float32 either way.</summary>
    private Func<Tensor, Tensor, Tensor?, Tensor> NetworkIn(Precision precision)
    {
        if (precision == Precision.Fp32) return NetworkForward;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _bf16 ??= new LowPrecisionCopy(_network, bfloat16);
            return _bf16.Forward;
        }
    }

    /// <summary>The model's ONNX Runtime session on the in-memory export of the network, made on first use and reused by every
    /// batch and thread.</summary>
    public OnnxRuntimeNetwork OnnxNetwork()
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_onnx is null)
            {
                using var stream = new MemoryStream();
                UNetOnnxExporter.Export(_network, _config, stream);
                _onnx = new OnnxRuntimeNetwork(stream.ToArray(), _config.Network, _host);
            }
            return _onnx;
        }
    }

    /// <summary>True once the ONNX Runtime session has been opened (<see cref="OnnxNetwork"/>).</summary>
    public bool OnnxNetworkOpened
    {
        get
        {
            lock (_lock) return _onnx is not null;
        }
    }

    /// <summary>
    /// The denoiser of one sampling batch for other loops (RePaint): the network, wrapped for self-conditioning when the model
    /// uses it. <paramref name="network"/> replaces the network (tests pass a counting double). Dispose the state after the batch.
    /// </summary>
    public (Func<Tensor, Tensor, Tensor> Denoise, IDisposable? State) BatchDenoiser(Func<Tensor, Tensor, Tensor>? network = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var net = network ?? ((x, t) => NetworkForward(x, t, null));   // no class label (the null class of a class-conditional model)
        if (!_config.SelfConditioning) return (net, null);
        var selfConditioned = SelfConditioning.Denoiser(net, _schedule, _config.Prediction);
        return (selfConditioned.Denoise, selfConditioned);
    }

    /// <summary>Frees the bfloat16 copy and the ONNX Runtime session, if they were made; the network belongs to the model.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            _bf16?.Dispose();
            _onnx?.Dispose();
        }
    }
}
