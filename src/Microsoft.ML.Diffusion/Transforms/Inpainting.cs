using Microsoft.ML;
using Microsoft.ML.Diffusion;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Runtime;
using Microsoft.ML.Diffusion.Transforms;

[assembly: LoadableClass(typeof(InpaintingTransformer), null, typeof(SignatureLoadModel),
    "Inpainting Transformer", InpaintingTransformer.LoaderSignature)]

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Inpainting with RePaint (Lugmayr et al. 2022): an estimator over an unconditional <see cref="DiffusionModel"/> whose
/// <see cref="ImageToImageEstimator{TTransformer}.Fit"/> checks the input schema and returns an <see cref="InpaintingTransformer"/> (nothing is trained).
/// Created by <c>mlContext.Generative.Inpaint(...)</c>.
/// </summary>
public sealed class InpaintingEstimator : ImageToImageEstimator<InpaintingTransformer>
{
    private readonly string? _maskColumnName;
    private readonly InpaintOptions _options;

    internal InpaintingEstimator(IHostEnvironment env, DiffusionModel model, string outputColumnName, string imageColumnName,
        string? maskColumnName, InpaintOptions? options)
        : base(env, model, outputColumnName, imageColumnName)
    {
        _maskColumnName = string.IsNullOrEmpty(maskColumnName) ? null : maskColumnName;
        model.RequireDdpmObjective("RePaint inpainting (mlContext.Generative.Inpaint)");
        _options = (options ?? new InpaintOptions()).Clone();
        _options.Validate(model.Timesteps);
        if (model.Conditioning is { } c)
            throw new ArgumentException(
                $"This diffusion model is a conditional super-resolution model (Conditioning {c}); RePaint inpainting needs an unconditional " +
                "model (trained without DiffusionTrainer.Options.Conditioning).", nameof(model));
    }

    private protected override InpaintingTransformer CreateTransformer() =>
        new(Env, Model, OutputColumnName, ImageColumnName, _maskColumnName, _options, ownsModel: false);

    /// <summary>The image column (model size), and the mask column when named.</summary>
    private protected override void CheckInput(SchemaShape inputSchema)
    {
        int size = Model.ImageSize;
        ImageMappingColumns.CheckImage(inputSchema, ImageColumnName, size, "the diffusion model's image size");
        if (_maskColumnName is not null) ImageMappingColumns.CheckMask(inputSchema, _maskColumnName, size);
    }
}

/// <summary>
/// Fills the masked pixels of each row's image with a diffusion model (RePaint), keeping the known pixels exactly. The mask
/// comes from a mask column (an image, white keeps; or a Boolean/Single vector of the image's pixels, true/1 keeps) or,
/// without one, from <see cref="InpaintOptions.Mask"/>. Row i draws its noise from seed Seed + i, so its output depends
/// on that row only. Saved and loaded with mlContext.Model, the diffusion model's weights included.
/// </summary>
public sealed class InpaintingTransformer : ImageToImageTransformer
{
    internal const string LoaderSignature = "InpaintingTransformer";
    private readonly InpaintOptions _options;

    internal InpaintingTransformer(IHostEnvironment env, DiffusionModel model, string outputColumnName, string imageColumnName,
        string? maskColumnName, InpaintOptions options, bool ownsModel)
        : base(env, nameof(InpaintingTransformer), model, outputColumnName, imageColumnName, ownsModel)
    {
        MaskColumnName = maskColumnName;
        _options = options.Clone();
        _options.Validate(model.Timesteps);
    }

    /// <summary>The mask column, or null when <see cref="InpaintOptions.Mask"/> gives the mask.</summary>
    public string? MaskColumnName { get; }

    /// <summary>The RePaint settings (a copy).</summary>
    public InpaintOptions Options => _options.Clone();

    private protected override int BatchSize => _options.BatchSize;

    private protected override IReadOnlyList<DataViewSchema.Column> CheckInput(DataViewSchema inputSchema)
    {
        int size = Model.ImageSize;
        var columns = new List<DataViewSchema.Column> { ImageMappingColumns.CheckImage(inputSchema, ImageColumnName, size, "the diffusion model's image size") };
        if (MaskColumnName is not null) columns.Add(ImageMappingColumns.CheckMask(inputSchema, MaskColumnName, size));
        return columns;
    }

    private protected override Func<long, ImageRequest> CreateReader(DataViewRow row)
    {
        int size = Model.ImageSize;
        var schema = row.Schema;
        var image = ImageMappingColumns.ImageReader(row, schema[ImageColumnName], size, Model.Channels, "the diffusion model's image size",
            _options.ConvertToGrayscale ? null : "InpaintOptions.ConvertToGrayscale");
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
        InpaintMasks.Create(_options.Mask, Model.ImageSize, unchecked((int)_options.SeedOfRow(row))).Select(k => k ? 1f : 0f).ToArray();

    private protected override byte[][] MapBatch(IReadOnlyList<ImageRequest> requests)
    {
        using var knownTensor = ImageRequest.Images(requests, Model.Channels, Model.ImageSize);
        using var maskTensor = ImageRequest.Masks(requests, Model.ImageSize);
        var seeds = requests.Select(r => _options.SeedOfRow(r.Row)).ToArray();
        using var channel = Host.Start("RePaint");
        var log = RePaintProgressLog.Start(channel, "Inpainting", _options, Model.Timesteps, requests[0].Row, requests.Count);
        using var result = RePaintRunner.Run(Model, _options, knownTensor, maskTensor, seeds, NetworkOverride, log: log);
        return ImageTensorConverter.ToBgraPixels(result);
    }

    // ---- persistence ----

    /// <summary>The format that added ConvertToGrayscale (0x00010001: the first).</summary>
    private const uint GrayscaleOptionVersion = 0x00010002;

    /// <summary>The format that added the inference engine (<see cref="RePaintOptions.Engine"/>).</summary>
    private const uint EngineOptionVersion = 0x00010003;

    private static VersionInfo GetVersionInfo() => new(
        modelSignature: "INPAINTT",
        verWrittenCur: EngineOptionVersion,
        verReadableCur: EngineOptionVersion,
        verWeCanReadBack: 0x00010001,
        loaderSignature: LoaderSignature,
        loaderAssemblyName: typeof(InpaintingTransformer).Assembly.FullName);

    private protected override VersionInfo VersionInfo => GetVersionInfo();

    private protected override void SaveSettings(BinaryWriter writer)
    {
        // string: mask column ("" = built-in mask)
        writer.Write(MaskColumnName ?? string.Empty);
        // RePaint settings (RePaintOptions.WriteSettings); int: built-in mask kind
        _options.WriteSettings(writer);
        writer.Write((int)_options.Mask);
        // bool: ConvertToGrayscale (format 0x00010002)
        writer.Write(_options.ConvertToGrayscale);
        // int: Engine (InferenceEngine; format 0x00010003)
        writer.Write((int)_options.Engine);
    }

    private static InpaintingTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        var (output, image) = LoadColumns(ctx, GetVersionInfo());
        string mask = ctx.Reader.ReadString();
        var options = new InpaintOptions();
        options.ReadSettings(ctx.Reader);
        options.Mask = (InpaintMaskKind)ctx.Reader.ReadInt32();
        // Transformers saved before the option converted color images silently: they keep doing so.
        options.ConvertToGrayscale = ctx.Header.ModelVerWritten < GrayscaleOptionVersion || ctx.Reader.ReadBoolean();
        // Transformers saved before the engine option ran on TorchSharp.
        options.Engine = ctx.Header.ModelVerWritten < EngineOptionVersion ? InferenceEngine.TorchSharp : ReadEngine(ctx.Reader);
        var model = LoadModel(env, ctx);
        return new InpaintingTransformer(env, model, output, image, mask.Length == 0 ? null : mask, options, ownsModel: true);
    }
}
