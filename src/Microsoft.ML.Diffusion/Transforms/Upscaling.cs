using Microsoft.ML;
using Microsoft.ML.Diffusion;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Transforms;

[assembly: LoadableClass(typeof(UpscalingTransformer), null, typeof(SignatureLoadModel),
    "Upscaling Transformer", UpscalingTransformer.LoaderSignature)]

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Super-resolution with a diffusion model: an estimator whose <see cref="ImageToImageEstimator{TTransformer}.Fit"/> checks the input schema and returns an
/// <see cref="UpscalingTransformer"/> (nothing is trained). Created by <c>mlContext.Generative.Upscale(...)</c>.
/// </summary>
public sealed class UpscalingEstimator : ImageToImageEstimator<UpscalingTransformer>
{
    private readonly UpscaleOptions _options;

    internal UpscalingEstimator(IHostEnvironment env, DiffusionModel model, string outputColumnName, string imageColumnName, UpscaleOptions? options)
        : base(env, model, outputColumnName, imageColumnName)
    {
        _options = (options ?? new UpscaleOptions()).Clone();
        _options.Validate(model.Timesteps, model.ImageSize);
        if (model.Conditioning is null) model.RequireDdpmObjective("Upscaling an unconditional model (RePaint; train a super-resolution model with Conditioning.LowResolution instead)");
        UpscalingTransformer.CheckLatent(model, _options.Factor);
        UpscalingTransformer.CheckConditioning(model, _options.Factor);
    }

    private protected override UpscalingTransformer CreateTransformer() =>
        new(Env, Model, OutputColumnName, ImageColumnName, _options, ownsModel: false);

    /// <summary>The image column: model size / Factor.</summary>
    private protected override void CheckInput(SchemaShape inputSchema) =>
        ImageMappingColumns.CheckImage(inputSchema, ImageColumnName, Model.ImageSize / _options.Factor, UpscalingTransformer.Why(Model, _options.Factor));
}

/// <summary>
/// Upscales each row's image by <see cref="UpscaleOptions.Factor"/> (2 or 4) to the diffusion model's size. With an
/// unconditional model, RePaint-style (Lugmayr et al. 2022, "Super-Resolve"): the input pixel (i, j) is the known pixel
/// (Factor i, Factor j) of the model's grid and the other pixels are sampled, so the input pixels appear unchanged in the
/// output. With a super-resolution model (<c>DiffusionTrainer.Options.Conditioning = Conditioning.LowResolution(Factor)</c>,
/// SR3), the network sees the bicubic upsampling of the input as extra channels and its default sampler samples the image.
/// Row i draws its noise from seed Seed + i. Saved and loaded with mlContext.Model, the diffusion model's weights included.
/// </summary>
public sealed class UpscalingTransformer : ImageToImageTransformer
{
    internal const string LoaderSignature = "UpscalingTransformer";
    private readonly UpscaleOptions _options;

    internal UpscalingTransformer(IHostEnvironment env, DiffusionModel model, string outputColumnName, string imageColumnName,
        UpscaleOptions options, bool ownsModel)
        : base(env, nameof(UpscalingTransformer), model, outputColumnName, imageColumnName, ownsModel)
    {
        _options = options.Clone();
        _options.Validate(model.Timesteps, model.ImageSize);
        CheckLatent(model, _options.Factor);
        CheckConditioning(model, _options.Factor);
    }

    /// <summary>The factor and RePaint settings (a copy).</summary>
    public UpscaleOptions Options => _options.Clone();

    /// <summary>Side of the input images: model size / Factor.</summary>
    public int InputSize => Model.ImageSize / _options.Factor;

    /// <summary>A latent model upscales only by a factor larger than its autoencoder's: otherwise every latent cell holds a known
    /// low-resolution pixel and RePaint in latent space has nothing to sample.</summary>
    internal static void CheckLatent(DiffusionModel model, int factor)
    {
        if (model.Latent is { } latent && factor <= latent.DownsamplingFactor)
            throw new ArgumentOutOfRangeException(nameof(UpscaleOptions.Factor), factor,
                $"UpscaleOptions.Factor {factor} is not larger than the latent model's autoencoder factor {latent.DownsamplingFactor}: every " +
                $"{latent.DownsamplingFactor}x{latent.DownsamplingFactor}-pixel latent cell would hold a known low-resolution pixel, leaving nothing for " +
                "RePaint to sample in latent space. Use a pixel-space model, or an autoencoder with a smaller DownsamplingFactor.");
    }

    internal static string Why(DiffusionModel model, int factor) =>
        $"the model's {model.ImageSize}x{model.ImageSize} divided by the factor {factor}";

    /// <summary>A super-resolution model (SR3) upscales by its own factor only: throws when <paramref name="factor"/> differs.</summary>
    internal static void CheckConditioning(DiffusionModel model, int factor)
    {
        if (model.Conditioning is { Kind: ConditioningKind.LowResolution } c && c.Factor != factor)
            throw new ArgumentOutOfRangeException(nameof(factor), factor,
                $"UpscaleOptions.Factor is {factor} but the diffusion model is a super-resolution model trained for factor {c.Factor} " +
                $"(Conditioning {c}); set Factor = {c.Factor}.");
    }

    /// <summary>
    /// The one mapping from a low-resolution batch [B, C, size/Factor, size/Factor] (CPU, [-1, 1]) to the high-resolution
    /// result [B, C, size, size] (CPU).
    /// <list type="bullet">
    /// <item>A super-resolution model (trained with <c>Conditioning.LowResolution(Factor)</c>; SR3, Saharia et al. 2021) samples
    /// p(x | upsample(low-res)) with its <see cref="DiffusionModel.DefaultSampler"/> (set it with <see cref="DiffusionModel.WithSampler"/>);
    /// the RePaint settings are not used, and the low-resolution pixels are conditions, not kept pixels.</item>
    /// <item>An unconditional model runs RePaint with the low-resolution pixels as the known pixels of every Factor-th row and
    /// column of the model's grid (Lugmayr et al. 2022).</item>
    /// </list>
    /// </summary>
    private Tensor UpscaleBatch(Tensor lowRes, IReadOnlyList<uint> seeds, long firstRow)
    {
        if (Model.Conditioning is { Kind: ConditioningKind.LowResolution })
        {
            var sampler = Model.DefaultSampler;
            sampler.BatchSize = _options.BatchSize;
            sampler.Progress = _options.Progress;
            sampler.CancellationToken = _options.CancellationToken;
            sampler.Engine = _options.Engine;
            if (sampler.Engine == InferenceEngine.OnnxRuntime) sampler.Precision = Precision.Fp32;   // the graph is float32 (a bfloat16 default sampler runs it in float32)
            return Model.SampleSuperResolution(lowRes, seeds, sampler);
        }

        int f = _options.Factor, size = Model.ImageSize;
        long b = lowRes.shape[0], c = lowRes.shape[1];
        using var scope = NewDisposeScope();
        var grid = TensorIndex.Slice(0, null, f);
        var known = zeros(b, c, size, size);
        known.index_put_(lowRes, TensorIndex.Colon, TensorIndex.Colon, grid, grid);
        var mask = zeros(b, 1, size, size);
        mask.index_put_(ones(b, 1, size / f, size / f), TensorIndex.Colon, TensorIndex.Colon, grid, grid);
        using var channel = Host.Start("RePaint");
        var log = RePaintProgressLog.Start(channel, $"Upscaling x{f}", _options, Model.Timesteps, firstRow, seeds.Count);
        if (Model.Latent is null)
            return RePaintRunner.Run(Model, _options, known, mask, seeds, NetworkOverride, log: log).MoveToOuterDisposeScope();
        // Latent model: the encoder sees the clamped bicubic upsampling of the input, and a latent cell is known when it holds a
        // known (grid) pixel; the grid pixels are re-imposed after decoding.
        var upsampled = Conditions.LowResolutionCondition.Upsample(lowRes.to_type(float32), size);
        return RePaintRunner.Run(Model, _options, known, mask, seeds, NetworkOverride, upsampled, cellKnownIfAnyPixel: true, log: log).MoveToOuterDisposeScope();
    }

    private protected override int BatchSize => _options.BatchSize;

    private protected override IReadOnlyList<DataViewSchema.Column> CheckInput(DataViewSchema inputSchema) =>
        new[] { ImageMappingColumns.CheckImage(inputSchema, ImageColumnName, InputSize, Why(Model, _options.Factor)) };

    private protected override Func<long, ImageRequest> CreateReader(DataViewRow row) =>
        ImageMappingColumns.RequestReader(row, row.Schema[ImageColumnName], InputSize, Model.Channels, Why(Model, _options.Factor),
            _options.ConvertToGrayscale ? null : "UpscaleOptions.ConvertToGrayscale");

    private protected override byte[][] MapBatch(IReadOnlyList<ImageRequest> requests)
    {
        using var lowRes = ImageRequest.Images(requests, Model.Channels, InputSize);
        var seeds = requests.Select(r => _options.SeedOfRow(r.Row)).ToArray();
        using var result = UpscaleBatch(lowRes, seeds, requests[0].Row);
        return ImageTensorConverter.ToBgraPixels(result);
    }

    // ---- persistence ----

    /// <summary>The format that added ConvertToGrayscale (0x00010001: the first).</summary>
    private const uint GrayscaleOptionVersion = 0x00010002;

    /// <summary>The format that added the inference engine (<see cref="RePaintOptions.Engine"/>).</summary>
    private const uint EngineOptionVersion = 0x00010003;

    private static VersionInfo GetVersionInfo() => new(
        modelSignature: "UPSCALET",
        verWrittenCur: EngineOptionVersion,
        verReadableCur: EngineOptionVersion,
        verWeCanReadBack: 0x00010001,
        loaderSignature: LoaderSignature,
        loaderAssemblyName: typeof(UpscalingTransformer).Assembly.FullName);

    private protected override VersionInfo VersionInfo => GetVersionInfo();

    private protected override void SaveSettings(BinaryWriter writer)
    {
        // RePaint settings (RePaintOptions.WriteSettings); int: factor
        _options.WriteSettings(writer);
        writer.Write(_options.Factor);
        // bool: ConvertToGrayscale (format 0x00010002)
        writer.Write(_options.ConvertToGrayscale);
        // int: Engine (InferenceEngine; format 0x00010003)
        writer.Write((int)_options.Engine);
    }

    private static UpscalingTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        var (output, image) = LoadColumns(ctx, GetVersionInfo());
        var options = new UpscaleOptions();
        options.ReadSettings(ctx.Reader);
        options.Factor = ctx.Reader.ReadInt32();
        // Transformers saved before the option converted color images silently: they keep doing so.
        options.ConvertToGrayscale = ctx.Header.ModelVerWritten < GrayscaleOptionVersion || ctx.Reader.ReadBoolean();
        // Transformers saved before the engine option ran on TorchSharp.
        options.Engine = ctx.Header.ModelVerWritten < EngineOptionVersion ? InferenceEngine.TorchSharp : ReadEngine(ctx.Reader);
        var model = LoadModel(env, ctx);
        return new UpscalingTransformer(env, model, output, image, options, ownsModel: true);
    }
}
