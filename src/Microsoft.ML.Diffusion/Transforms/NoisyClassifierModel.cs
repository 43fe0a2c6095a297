using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Transforms;

[assembly: LoadableClass(typeof(NoisyClassifierModel), null, typeof(SignatureLoadModel),
    "Noisy Classifier Model", NoisyClassifierModel.LoaderSignature)]

namespace Microsoft.ML.Diffusion;

/// <summary>
/// A trained noisy classifier p_phi(y | x_t, t) (<see cref="NoisyClassifierTrainer"/>, Dhariwal &amp; Nichol 2021): set it as
/// <see cref="SamplerOptions.Classifier"/> to guide a <see cref="DiffusionModel"/> with the same schedule, T, image size and
/// channels towards a class. As an <see cref="ITransformer"/> it classifies clean images (t = 0): Transform adds
/// <see cref="PredictedLabelColumnName"/> (a key, value k + 1 for class k, as ML.NET's multiclass trainers write it) and
/// <see cref="ScoreColumnName"/> (the softmax over the classes). Saved and loaded with mlContext.Model, weights included.
/// </summary>
public sealed class NoisyClassifierModel : ITransformer, ICanSaveModel, IDisposable, IGuidanceClassifier
{
    internal const string LoaderSignature = "DiffusionNoisyClassifier";
    private const int InternalBatch = 64;
    private readonly IHost _host;
    private readonly NoisyClassifierNetwork _network;
    private readonly Device _device;
    private bool _disposed;

    internal NoisyClassifierModel(IHostEnvironment env, NoisyClassifierModelConfig config, NoisyClassifierNetwork network, Device device)
    {
        _host = env.Register(nameof(NoisyClassifierModel));
        Config = config;
        _network = network;
        _device = device;
        _network.to(device);
        _network.eval();
        LogitsForward = (x, t) => _network.forward(x, t);
    }

    /// <summary>The network, diffusion process, columns and training facts of this model.</summary>
    public NoisyClassifierModelConfig Config { get; }

    /// <summary>Number of classes.</summary>
    public int NumClasses => Config.Network.NumClasses;

    /// <summary>Image side in pixels.</summary>
    public int ImageSize => Config.Network.ImageSize;

    /// <summary>1 (grayscale) or 3 (RGB).</summary>
    public int Channels => Config.Network.InChannels;

    /// <summary>T of the diffusion process it was trained for.</summary>
    public int Timesteps => Config.Timesteps;

    /// <summary>The noise schedule it was trained for.</summary>
    public NoiseSchedule Schedule => Config.Schedule;

    /// <summary>The network's parameter count.</summary>
    public long ParameterCount => _network.ParameterCount;

    /// <summary>The image column <see cref="Transform"/> reads.</summary>
    public string ImageColumnName => Config.ImageColumnName;

    /// <summary>The predicted-label column <see cref="Transform"/> adds (key type, NumClasses values).</summary>
    public string PredictedLabelColumnName => Config.PredictedLabelColumnName;

    /// <summary>The score column <see cref="Transform"/> adds (NumClasses probabilities).</summary>
    public string ScoreColumnName => Config.ScoreColumnName;

    /// <summary>The device the network runs on.</summary>
    public Device Device => _device;

    /// <summary>The network call (x_t, t) -> logits [B, NumClasses]. Tests replace it with a classifier of known gradient.</summary>
    internal Func<Tensor, Tensor, Tensor> LogitsForward { get; set; }

    /// <summary>
    /// log p_phi(y | x_t, t) for every class: the log-softmax of the logits, [N, NumClasses] on the CPU, for images
    /// <paramref name="images"/> [N, C, S, S] (float, [-1, 1] scale, any device) at timestep <paramref name="timestep"/> (0: clean images).
    /// </summary>
    public Tensor PredictLogProbabilities(Tensor images, int timestep = 0)
    {
        ArgumentNullException.ThrowIfNull(images);
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckImages(images);
        if (timestep < 0 || timestep >= Timesteps)
            throw new ArgumentOutOfRangeException(nameof(timestep), timestep, $"timestep is {timestep}; expected 0..{Timesteps - 1} (T = {Timesteps}).");
        var parts = new List<Tensor>();
        try
        {
            using var _ = no_grad();
            for (long start = 0; start < images.shape[0]; start += InternalBatch)
            {
                using var scope = NewDisposeScope();
                long n = Math.Min(InternalBatch, images.shape[0] - start);
                var chunk = images.narrow(0, start, n).to_type(float32).to(_device);
                var t = full(new long[] { n }, (long)timestep, dtype: int64, device: _device);
                parts.Add(nn.functional.log_softmax(LogitsForward(chunk, t), 1).cpu().MoveToOuterDisposeScope());
            }
            return cat(parts, 0);
        }
        finally
        {
            foreach (var p in parts) p.Dispose();
        }
    }

    private void CheckImages(Tensor images)
    {
        var expected = new long[] { Channels, ImageSize, ImageSize };
        if (images.dim() != 4 || !images.shape.Skip(1).SequenceEqual(expected))
            throw new ArgumentException(
                $"The images have shape [{string.Join(", ", images.shape)}]; this classifier expects [N, {Channels}, {ImageSize}, {ImageSize}].", nameof(images));
    }

    /// <inheritdoc/>
    Tensor IGuidanceClassifier.LogProbabilityGradient(Tensor x, Tensor t, Tensor labels) => LogProbabilityGradient(x, t, labels);

    /// <summary>
    /// g = grad_x log p_phi(y | x_t, t) (Dhariwal &amp; Nichol 2021, Algorithms 1 and 2): the gradient of the log-softmax of the
    /// logits at the labels <paramref name="labels"/> [B] int64 with respect to <paramref name="x"/> [B, C, S, S], each image's
    /// log-probability differentiated with respect to its own pixels. Runs with autograd enabled even inside a no_grad scope;
    /// returns a new tensor on x's device that carries no graph.
    /// </summary>
    internal Tensor LogProbabilityGradient(Tensor x, Tensor t, Tensor labels)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var scope = NewDisposeScope();
        using var grad = enable_grad();
        var input = x.detach().to_type(float32).requires_grad_(true);
        var logits = LogitsForward(input, t);
        // Sum over the batch: image i's term depends on x_i only, so d(sum)/dx_i = grad of log p(y_i | x_i).
        var selected = nn.functional.log_softmax(logits, 1).gather(1, labels.to(logits.device).unsqueeze(1)).sum();
        var g = autograd.grad(new[] { selected }, new[] { input })[0];
        return g.detach().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Throws when this classifier cannot guide <paramref name="model"/>: another schedule, T, image size or channels, or a latent
    /// or super-resolution model. The message names <see cref="SamplerOptions.Classifier"/>, both values and what is expected.
    /// </summary>
    void IGuidanceClassifier.CheckCompatible(DiffusionModelConfig model)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (model.Latent is not null)
            throw new ArgumentException(
                "SamplerOptions.Classifier is set, but this is a latent diffusion model: classifier guidance is not supported for latent models " +
                "(the classifier sees pixels, the sampler latents). Leave SamplerOptions.Classifier null.", "options");
        if (model.ClassifierGuidanceUnsupported is string reason)
            throw new NotSupportedException($"SamplerOptions.Classifier is set, but this is {reason}: classifier guidance is not supported for it. Leave SamplerOptions.Classifier null.");
        void Mismatch(string what, object mine, object theirs)
        {
            if (!Equals(mine, theirs))
                throw new ArgumentException(
                    $"SamplerOptions.Classifier was trained for {what} {mine}, but the diffusion model has {what} {theirs}; " +
                    "expected a classifier trained for this model (NoisyClassifierTrainer.Options.DiffusionModel).", "options");
        }
        Mismatch("the noise schedule", Schedule, model.Schedule);
        Mismatch("T =", Timesteps, model.Timesteps);
        Mismatch("image size", ImageSize, model.ImageSize);
        Mismatch("channels", Channels, model.Channels);
    }

    // ---- ITransformer ----

    /// <summary>True: a PredictionEngine classifies each row on its own (<see cref="Transform"/> classifies in batches of 64).</summary>
    public bool IsRowToRowMapper => true;

    /// <summary>The input schema plus <see cref="PredictedLabelColumnName"/> (key, NumClasses values) and <see cref="ScoreColumnName"/>
    /// (Single vector of NumClasses); throws, naming the column, when the image column is missing or of the wrong size.</summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        ImageMappingColumns.CheckImage(inputSchema, ImageColumnName, ImageSize, "the noisy classifier's image size");
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema.Where(c => !c.IsHidden && c.Name != PredictedLabelColumnName && c.Name != ScoreColumnName));
        builder.AddColumn(PredictedLabelColumnName, new KeyDataViewType(typeof(uint), NumClasses));
        builder.AddColumn(ScoreColumnName, new VectorDataViewType(NumberDataViewType.Single, NumClasses));
        return builder.ToSchema();
    }

    /// <summary>Lazily adds the predicted label and the class probabilities of each row's image (classified at t = 0).</summary>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new BatchMappingDataView<float[], float[]>(new ClassifierScoreMapper(this), input, GetOutputSchema(input.Schema));
    }

    /// <summary>The row-by-row classifier (PredictionEngine): the same columns as <see cref="Transform"/>, each row classified on its own.</summary>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new BatchMappingRowMapper<float[], float[]>(new ClassifierScoreMapper(this), inputSchema, GetOutputSchema(inputSchema));
    }

    /// <summary>Class probabilities (softmax at t = 0) of a batch of images read from column <see cref="ImageColumnName"/>: one array per image.</summary>
    internal float[][] ScoreBatch(IReadOnlyList<float[]> images)
    {
        int n = images.Count;
        using var x = ImageRequest.Stack(images, Channels, ImageSize);
        using var logp = PredictLogProbabilities(x);
        using var p = logp.exp();
        var flat = p.data<float>().ToArray();
        return Enumerable.Range(0, n).Select(i => flat.AsSpan(i * NumClasses, NumClasses).ToArray()).ToArray();
    }

    // ---- ONNX export ----

    /// <summary>Writes the classifier network as a standard ONNX model to <paramref name="path"/> (through a temporary file); see
    /// <see cref="ExportOnnx(Stream)"/>.</summary>
    /// <param name="path">The .onnx file to create or overwrite.</param>
    public void ExportOnnx(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Onnx.OnnxModelFile.Write(path, ExportOnnx);
    }

    /// <summary>
    /// Writes the classifier network as a standard ONNX model (opset 17, dynamic batch dimension, weights as initializers) to
    /// <paramref name="stream"/>. Inputs: <c>x_t</c> float32 [B, Channels, ImageSize, ImageSize] (images in the [-1, 1] scale, noisy
    /// at timestep t) and <c>t</c> float32 [B] (0..T-1; 0 for clean images). Output: <c>logits</c> float32 [B, NumClasses];
    /// log p(y | x_t, t) is their log-softmax (<see cref="PredictLogProbabilities"/>). Classifier guidance needs the gradient of
    /// that with respect to x_t, which ONNX Runtime's inference graph does not give: guidance keeps the classifier on TorchSharp.
    /// The metadata holds <see cref="Config"/> as JSON under <c>noisy_classifier_config</c>, <c>model_kind</c> =
    /// <c>noisy_classifier</c>, and the schedule, T, image size, channels and class count under their own keys.
    /// </summary>
    /// <param name="stream">A writable stream; it is left open.</param>
    public void ExportOnnx(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Onnx.NoisyClassifierOnnxExporter.Export(_network, Config, stream);
    }

    // ---- persistence ----

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        NoisyClassifierFormat.Save(ctx, Config, _network);
    }

    private static NoisyClassifierModel Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        var (config, network) = NoisyClassifierFormat.Load(ctx);
        return new NoisyClassifierModel(env, config, network, DeviceSelection.Select(env));
    }

    /// <summary>Frees the network's native memory.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _network.Dispose();
    }
}
