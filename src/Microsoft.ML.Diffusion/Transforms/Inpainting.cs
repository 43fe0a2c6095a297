using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

[assembly: LoadableClass(typeof(InpaintingTransformer), null, typeof(SignatureLoadModel),
    "Inpainting Transformer", InpaintingTransformer.LoaderSignature)]

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Inpainting with RePaint (Lugmayr et al. 2022): an estimator over an unconditional <see cref="DiffusionModel"/> whose
/// <see cref="Fit"/> checks the input schema and returns an <see cref="InpaintingTransformer"/> (nothing is trained).
/// Created by <c>mlContext.Generative.Inpaint(...)</c>.
/// </summary>
public sealed class InpaintingEstimator : IEstimator<InpaintingTransformer>
{
    private readonly IHostEnvironment _env;
    private readonly DiffusionModel _model;
    private readonly string _outputColumnName;
    private readonly string _imageColumnName;
    private readonly string? _maskColumnName;
    private readonly InpaintOptions _options;

    internal InpaintingEstimator(IHostEnvironment env, DiffusionModel model, string outputColumnName, string imageColumnName,
        string? maskColumnName, InpaintOptions? options)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(outputColumnName);
        ArgumentException.ThrowIfNullOrEmpty(imageColumnName);
        _env = env;
        _model = model;
        _outputColumnName = outputColumnName;
        _imageColumnName = imageColumnName;
        _maskColumnName = string.IsNullOrEmpty(maskColumnName) ? null : maskColumnName;
        _options = (options ?? new InpaintOptions()).Clone();
        _options.Validate(model.Timesteps);
        if (model.Conditioning is { } c)
            throw new ArgumentException(
                $"This diffusion model is a conditional super-resolution model (Conditioning {c}); RePaint inpainting needs an unconditional " +
                "model (trained without DiffusionTrainer.Options.Conditioning).", nameof(model));
    }

    /// <summary>Checks the input (image column, and the mask column when named) and returns the transformer.</summary>
    public InpaintingTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var transformer = new InpaintingTransformer(_env, _model, _outputColumnName, _imageColumnName, _maskColumnName, _options, ownsModel: false);
        transformer.GetOutputSchema(input.Schema);
        return transformer;
    }

    /// <summary>The input columns plus the output image column (model size).</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        int size = _model.ImageSize;
        ImageMappingColumns.CheckImage(inputSchema, _imageColumnName, size, "the diffusion model's image size");
        if (_maskColumnName is not null) ImageMappingColumns.CheckMask(inputSchema, _maskColumnName, size);
        return ImageMapping.OutputSchema(inputSchema, _outputColumnName, size);
    }
}

/// <summary>
/// Fills the masked pixels of each row's image with a diffusion model (RePaint), keeping the known pixels exactly. The mask
/// comes from a mask column (an image, white keeps; or a Boolean/Single vector of the image's pixels, true/1 keeps) or,
/// without one, from <see cref="InpaintOptions.Mask"/>. Row i draws its noise from seed Seed + i, so its output depends
/// on that row only. Saved and loaded with mlContext.Model, the diffusion model's weights included.
/// </summary>
public sealed class InpaintingTransformer : ITransformer, ICanSaveModel, IDisposable, IImageBatchMapper
{
    internal const string LoaderSignature = "InpaintingTransformer";
    private const string ModelEntryName = "DiffusionModel";
    private readonly IHost _host;
    private readonly DiffusionModel _model;
    private readonly InpaintOptions _options;
    private readonly bool _ownsModel;
    private bool _disposed;

    internal InpaintingTransformer(IHostEnvironment env, DiffusionModel model, string outputColumnName, string imageColumnName,
        string? maskColumnName, InpaintOptions options, bool ownsModel)
    {
        _host = env.Register(nameof(InpaintingTransformer));
        _model = model;
        OutputColumnName = outputColumnName;
        ImageColumnName = imageColumnName;
        MaskColumnName = maskColumnName;
        _options = options.Clone();
        _options.Validate(model.Timesteps);
        _ownsModel = ownsModel;
    }

    /// <summary>The diffusion model that fills the masked pixels.</summary>
    public DiffusionModel Model => _model;

    /// <summary>The column of filled images.</summary>
    public string OutputColumnName { get; }

    /// <summary>The column of images to fill.</summary>
    public string ImageColumnName { get; }

    /// <summary>The mask column, or null when <see cref="InpaintOptions.Mask"/> gives the mask.</summary>
    public string? MaskColumnName { get; }

    /// <summary>The RePaint settings (a copy).</summary>
    public InpaintOptions Options => _options.Clone();

    /// <summary>Replaces the model's network when set: tests count network calls through it.</summary>
    internal Func<Tensor, Tensor, Tensor>? NetworkOverride { get; set; }

    // ---- IImageBatchMapper ----

    int IImageBatchMapper.OutputSize => _model.ImageSize;

    int IImageBatchMapper.BatchSize => _options.BatchSize;

    IReadOnlyList<DataViewSchema.Column> IImageBatchMapper.CheckInput(DataViewSchema inputSchema)
    {
        int size = _model.ImageSize;
        var columns = new List<DataViewSchema.Column> { ImageMappingColumns.CheckImage(inputSchema, ImageColumnName, size, "the diffusion model's image size") };
        if (MaskColumnName is not null) columns.Add(ImageMappingColumns.CheckMask(inputSchema, MaskColumnName, size));
        return columns;
    }

    Func<long, ImageRequest> IImageBatchMapper.CreateReader(DataViewRow row)
    {
        int size = _model.ImageSize;
        var schema = row.Schema;
        var image = ImageMappingColumns.ImageReader(row, schema[ImageColumnName], size, _model.Channels, "the diffusion model's image size");
        var mask = MaskColumnName is null ? null : ImageMappingColumns.MaskReader(row, schema[MaskColumnName], size);
        return index =>
        {
            var pixels = image(index);
            var keep = mask is null ? BuiltInMask(index) : mask(index);
            return new ImageRequest(index, pixels, keep);
        };
    }

    /// <summary>Row <paramref name="row"/>'s mask from <see cref="InpaintOptions.Mask"/>, seeded with the row's seed.</summary>
    private float[] BuiltInMask(long row) =>
        InpaintMasks.Create(_options.Mask, _model.ImageSize, unchecked((int)_options.SeedOfRow(row))).Select(k => k ? 1f : 0f).ToArray();

    byte[][] IImageBatchMapper.MapBatch(IReadOnlyList<ImageRequest> requests)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        int n = requests.Count, c = _model.Channels, size = _model.ImageSize;
        var known = new float[n * c * size * size];
        var mask = new float[n * size * size];
        for (int i = 0; i < n; i++)
        {
            requests[i].Image.CopyTo(known, i * c * size * size);
            requests[i].Mask!.CopyTo(mask, i * size * size);
        }

        using var knownTensor = tensor(known, new long[] { n, c, size, size });
        using var maskTensor = tensor(mask, new long[] { n, 1, size, size });
        var seeds = requests.Select(r => _options.SeedOfRow(r.Row)).ToArray();
        using var result = RePaintRunner.Run(_model, _options, knownTensor, maskTensor, seeds, NetworkOverride);
        return ImageTensorConverter.ToBgraPixels(result);
    }

    // ---- ITransformer ----

    /// <summary>Always true: each row is mapped on its own (a PredictionEngine works).</summary>
    public bool IsRowToRowMapper => true;

    /// <summary>The input schema plus the output image column; throws, naming the column, for a missing or wrongly sized image or mask column.</summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        ((IImageBatchMapper)this).CheckInput(inputSchema);
        return ImageMapping.OutputSchema(inputSchema, OutputColumnName, _model.ImageSize);
    }

    /// <summary>Lazily adds the filled images; rows are filled in batches of <see cref="RePaintOptions.BatchSize"/>.</summary>
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
        modelSignature: "INPAINTT",
        verWrittenCur: 0x00010001,
        verReadableCur: 0x00010001,
        verWeCanReadBack: 0x00010001,
        loaderSignature: LoaderSignature,
        loaderAssemblyName: typeof(InpaintingTransformer).Assembly.FullName);

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo());
        // string: output column; string: image column; string: mask column ("" = built-in mask)
        ctx.Writer.Write(OutputColumnName);
        ctx.Writer.Write(ImageColumnName);
        ctx.Writer.Write(MaskColumnName ?? string.Empty);
        // RePaint settings (RePaintOptions.WriteSettings); int: built-in mask kind
        _options.WriteSettings(ctx.Writer);
        ctx.Writer.Write((int)_options.Mask);
        // sub-model "DiffusionModel": the network and its config
        ctx.SaveModel(_model, ModelEntryName);
    }

    private static InpaintingTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ctx.CheckAtModel(GetVersionInfo());
        string output = ctx.Reader.ReadString();
        string image = ctx.Reader.ReadString();
        string mask = ctx.Reader.ReadString();
        var options = new InpaintOptions();
        options.ReadSettings(ctx.Reader);
        options.Mask = (InpaintMaskKind)ctx.Reader.ReadInt32();
        ctx.LoadModel<DiffusionModel, SignatureLoadModel>(env, out var model, ModelEntryName);
        return new InpaintingTransformer(env, model, output, image, mask.Length == 0 ? null : mask, options, ownsModel: true);
    }

    /// <summary>Frees the diffusion model when this transformer was loaded from a file (a model passed to the estimator stays the caller's).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_ownsModel) _model.Dispose();
    }
}
