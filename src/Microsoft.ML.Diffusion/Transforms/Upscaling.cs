using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

[assembly: LoadableClass(typeof(UpscalingTransformer), null, typeof(SignatureLoadModel),
    "Upscaling Transformer", UpscalingTransformer.LoaderSignature)]

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Super-resolution with a diffusion model: an estimator whose <see cref="Fit"/> checks the input schema and returns an
/// <see cref="UpscalingTransformer"/> (nothing is trained). Created by <c>mlContext.Generative.Upscale(...)</c>.
/// </summary>
public sealed class UpscalingEstimator : IEstimator<UpscalingTransformer>
{
    private readonly IHostEnvironment _env;
    private readonly DiffusionModel _model;
    private readonly string _outputColumnName;
    private readonly string _imageColumnName;
    private readonly UpscaleOptions _options;

    internal UpscalingEstimator(IHostEnvironment env, DiffusionModel model, string outputColumnName, string imageColumnName, UpscaleOptions? options)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(outputColumnName);
        ArgumentException.ThrowIfNullOrEmpty(imageColumnName);
        _env = env;
        _model = model;
        _outputColumnName = outputColumnName;
        _imageColumnName = imageColumnName;
        _options = (options ?? new UpscaleOptions()).Clone();
        _options.Validate(model.Timesteps, model.ImageSize);
        UpscalingTransformer.CheckConditioning(model, _options.Factor);
    }

    /// <summary>Checks the input image column (model size / Factor) and returns the transformer.</summary>
    public UpscalingTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var transformer = new UpscalingTransformer(_env, _model, _outputColumnName, _imageColumnName, _options, ownsModel: false);
        transformer.GetOutputSchema(input.Schema);
        return transformer;
    }

    /// <summary>The input columns plus the output image column (model size).</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        ImageMappingColumns.CheckImage(inputSchema, _imageColumnName, _model.ImageSize / _options.Factor, UpscalingTransformer.Why(_model, _options.Factor));
        return ImageMapping.OutputSchema(inputSchema, _outputColumnName, _model.ImageSize);
    }
}

/// <summary>
/// Upscales each row's image by <see cref="UpscaleOptions.Factor"/> (2 or 4) to the diffusion model's size. With an
/// unconditional model, RePaint-style (Lugmayr et al. 2022, "Super-Resolve"): the input pixel (i, j) is the known pixel
/// (Factor i, Factor j) of the model's grid and the other pixels are sampled, so the input pixels appear unchanged in the
/// output. With a super-resolution model (<c>DiffusionTrainer.Options.Conditioning = Conditioning.LowResolution(Factor)</c>,
/// SR3), the network sees the bicubic upsampling of the input as extra channels and its default sampler samples the image.
/// Row i draws its noise from seed Seed + i. Saved and loaded with mlContext.Model, the diffusion model's weights included.
/// </summary>
public sealed class UpscalingTransformer : ITransformer, ICanSaveModel, IDisposable, IImageBatchMapper
{
    internal const string LoaderSignature = "UpscalingTransformer";
    private const string ModelEntryName = "DiffusionModel";
    private readonly IHost _host;
    private readonly DiffusionModel _model;
    private readonly UpscaleOptions _options;
    private readonly bool _ownsModel;
    private bool _disposed;

    internal UpscalingTransformer(IHostEnvironment env, DiffusionModel model, string outputColumnName, string imageColumnName,
        UpscaleOptions options, bool ownsModel)
    {
        _host = env.Register(nameof(UpscalingTransformer));
        _model = model;
        OutputColumnName = outputColumnName;
        ImageColumnName = imageColumnName;
        _options = options.Clone();
        _options.Validate(model.Timesteps, model.ImageSize);
        CheckConditioning(model, _options.Factor);
        _ownsModel = ownsModel;
    }

    /// <summary>The diffusion model that samples the missing pixels.</summary>
    public DiffusionModel Model => _model;

    /// <summary>The column of upscaled images (model size).</summary>
    public string OutputColumnName { get; }

    /// <summary>The column of low-resolution images (model size / Factor).</summary>
    public string ImageColumnName { get; }

    /// <summary>The factor and RePaint settings (a copy).</summary>
    public UpscaleOptions Options => _options.Clone();

    /// <summary>Side of the input images: model size / Factor.</summary>
    public int InputSize => _model.ImageSize / _options.Factor;

    /// <summary>Replaces the model's network when set: tests count network calls through it.</summary>
    internal Func<Tensor, Tensor, Tensor>? NetworkOverride { get; set; }

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
    private Tensor UpscaleBatch(Tensor lowRes, IReadOnlyList<uint> seeds)
    {
        if (_model.Conditioning is { Kind: ConditioningKind.LowResolution })
        {
            var sampler = _model.DefaultSampler;
            sampler.BatchSize = _options.BatchSize;
            sampler.Progress = _options.Progress;
            sampler.CancellationToken = _options.CancellationToken;
            return _model.SampleSuperResolution(lowRes, seeds, sampler);
        }

        int f = _options.Factor, size = _model.ImageSize;
        long b = lowRes.shape[0], c = lowRes.shape[1];
        using var scope = NewDisposeScope();
        var grid = TensorIndex.Slice(0, null, f);
        var known = zeros(b, c, size, size);
        known.index_put_(lowRes, TensorIndex.Colon, TensorIndex.Colon, grid, grid);
        var mask = zeros(b, 1, size, size);
        mask.index_put_(ones(b, 1, size / f, size / f), TensorIndex.Colon, TensorIndex.Colon, grid, grid);
        return RePaintRunner.Run(_model, _options, known, mask, seeds, NetworkOverride).MoveToOuterDisposeScope();
    }

    // ---- IImageBatchMapper ----

    int IImageBatchMapper.OutputSize => _model.ImageSize;

    int IImageBatchMapper.BatchSize => _options.BatchSize;

    IReadOnlyList<DataViewSchema.Column> IImageBatchMapper.CheckInput(DataViewSchema inputSchema) =>
        new[] { ImageMappingColumns.CheckImage(inputSchema, ImageColumnName, InputSize, Why(_model, _options.Factor)) };

    Func<long, ImageRequest> IImageBatchMapper.CreateReader(DataViewRow row)
    {
        var image = ImageMappingColumns.ImageReader(row, row.Schema[ImageColumnName], InputSize, _model.Channels, Why(_model, _options.Factor));
        return index => new ImageRequest(index, image(index), null);
    }

    byte[][] IImageBatchMapper.MapBatch(IReadOnlyList<ImageRequest> requests)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int n = requests.Count, c = _model.Channels, s = InputSize;
        var values = new float[n * c * s * s];
        for (int i = 0; i < n; i++) requests[i].Image.CopyTo(values, i * c * s * s);
        using var lowRes = tensor(values, new long[] { n, c, s, s });
        var seeds = requests.Select(r => _options.SeedOfRow(r.Row)).ToArray();
        using var result = UpscaleBatch(lowRes, seeds);
        return ImageTensorConverter.ToBgraPixels(result);
    }

    // ---- ITransformer ----

    /// <summary>Always true: each row is mapped on its own (a PredictionEngine works).</summary>
    public bool IsRowToRowMapper => true;

    /// <summary>The input schema plus the output image column; throws, naming the column and both sizes, for a wrongly sized input.</summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        ((IImageBatchMapper)this).CheckInput(inputSchema);
        return ImageMapping.OutputSchema(inputSchema, OutputColumnName, _model.ImageSize);
    }

    /// <summary>Lazily adds the upscaled images; rows are upscaled in batches of <see cref="RePaintOptions.BatchSize"/>.</summary>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new ImageMappingDataView(this, input, GetOutputSchema(input.Schema));
    }

    /// <summary>A row-to-row mapper (one row at a time) for PredictionEngine.</summary>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return new ImageMappingRowMapper(this, inputSchema, GetOutputSchema(inputSchema));
    }

    // ---- persistence ----

    private static VersionInfo GetVersionInfo() => new(
        modelSignature: "UPSCALET",
        verWrittenCur: 0x00010001,
        verReadableCur: 0x00010001,
        verWeCanReadBack: 0x00010001,
        loaderSignature: LoaderSignature,
        loaderAssemblyName: typeof(UpscalingTransformer).Assembly.FullName);

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo());
        // string: output column; string: image column
        ctx.Writer.Write(OutputColumnName);
        ctx.Writer.Write(ImageColumnName);
        // RePaint settings (RePaintOptions.WriteSettings); int: factor
        _options.WriteSettings(ctx.Writer);
        ctx.Writer.Write(_options.Factor);
        // sub-model "DiffusionModel": the network and its config
        ctx.SaveModel(_model, ModelEntryName);
    }

    private static UpscalingTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ctx.CheckAtModel(GetVersionInfo());
        string output = ctx.Reader.ReadString();
        string image = ctx.Reader.ReadString();
        var options = new UpscaleOptions();
        options.ReadSettings(ctx.Reader);
        options.Factor = ctx.Reader.ReadInt32();
        ctx.LoadModel<DiffusionModel, SignatureLoadModel>(env, out var model, ModelEntryName);
        return new UpscalingTransformer(env, model, output, image, options, ownsModel: true);
    }

    /// <summary>Frees the diffusion model when this transformer was loaded from a file (a model passed to the estimator stays the caller's).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_ownsModel) _model.Dispose();
    }
}
