using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Diffusion;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Runtime;
using Microsoft.ML.Diffusion.Transforms;
using Microsoft.ML.Diffusion.Columns;

[assembly: LoadableClass(typeof(SdeditTransformer), null, typeof(SignatureLoadModel),
    "SDEdit Image-to-Image Transformer", SdeditTransformer.LoaderSignature)]

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Image-to-image translation with SDEdit (Meng et al. 2022): an estimator over a <see cref="DiffusionModel"/> whose
/// <see cref="ImageToImageEstimator{TTransformer}.Fit"/> checks the input schema and returns an <see cref="SdeditTransformer"/>
/// (nothing is trained). Created by <c>mlContext.Generative.ImageToImage(...)</c>.
/// </summary>
public sealed class SdeditEstimator : ImageToImageEstimator<SdeditTransformer>
{
    private readonly ImageToImageOptions _options;

    internal SdeditEstimator(IHostEnvironment env, DiffusionModel model, string outputColumnName, string imageColumnName, ImageToImageOptions? options)
        : base(env, model, outputColumnName, imageColumnName)
    {
        _options = SdeditTransformer.Resolve(model, options ?? new ImageToImageOptions());
    }

    private protected override SdeditTransformer CreateTransformer() =>
        new(Env, Model, OutputColumnName, ImageColumnName, _options, ownsModel: false);

    /// <summary>The image column (model size), and the label column when named.</summary>
    private protected override void CheckInput(SchemaShape inputSchema)
    {
        ImageMappingColumns.CheckImage(inputSchema, ImageColumnName, Model.ImageSize, SdeditTransformer.Why);
        if (_options.LabelColumnName is { } label) LabelColumn.Check(inputSchema, label);
    }
}

/// <summary>
/// Translates each row's image with a diffusion model by SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with
/// Stochastic Differential Equations", section 3): the image x_0 (encoded first by a latent model) is noised by the forward process to
/// the noise level of step t_start of the sampler's loop, x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps (DDPM eq. 4; x_0 +
/// sigma eps for the sigma-space samplers), and denoised by the loop's remaining steps, as diffusers' img2img pipelines do: with N
/// steps and strength s, t_start = N - min(int(N s), N). The output keeps the input's coarse layout and colors and takes its detail
/// from the model. Row i draws eps and any per-step noise from seed Seed + i, so its output depends on its own row only. Saved and
/// loaded with mlContext.Model, the diffusion model's weights included.
/// </summary>
public sealed class SdeditTransformer : ImageToImageTransformer
{
    internal const string LoaderSignature = "SdeditTransformer";
    internal const string Why = "the diffusion model's image size";
    private readonly ImageToImageOptions _options;         // Sampler resolved (not null)

    internal SdeditTransformer(IHostEnvironment env, DiffusionModel model, string outputColumnName, string imageColumnName,
        ImageToImageOptions options, bool ownsModel)
        : base(env, nameof(SdeditTransformer), model, outputColumnName, imageColumnName, ownsModel)
    {
        _options = Resolve(model, options);
    }

    /// <summary>The strength, sampler (never null here: the model's default when none was given) and columns (a copy).</summary>
    public ImageToImageOptions Options => _options.Clone();

    /// <summary>The label column, or null (the null label).</summary>
    public string? LabelColumnName => _options.LabelColumnName;

    /// <summary>The solver steps each image is denoised by: min(int(N Strength), N) of the sampler's N (0: the input comes back).</summary>
    public int DenoisingSteps => SdeditSchedule.DenoisingSteps(Sampler.ResolveSteps(Model.Timesteps), _options.Strength);

    private SamplerOptions Sampler => _options.Sampler!;

    /// <summary>A validated copy of <paramref name="options"/> with the sampler resolved (the model's default when null); throws,
    /// naming the setting, when the model cannot run it (a super-resolution model, guidance without classes, a classifier or
    /// label column without a use).</summary>
    internal static ImageToImageOptions Resolve(DiffusionModel model, ImageToImageOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var resolved = options.Clone();
        resolved.Validate(model.Timesteps);
        resolved.Sampler ??= model.DefaultSampler;
        model.CheckSampler(resolved.Sampler);
        if (model.Conditioning is { } c)
            throw new ArgumentException(
                $"This diffusion model is a super-resolution model (Conditioning {c}): it needs a low-resolution image as its condition and " +
                "cannot translate an image by SDEdit; use mlContext.Generative.Upscale with it.", nameof(model));
        if (resolved.LabelColumnName is not null && model.NumClasses == 0 && resolved.Sampler.Classifier is null)
            throw new ArgumentException(
                $"ImageToImageOptions.LabelColumnName is '{resolved.LabelColumnName}', but this diffusion model has no class conditioning (trained " +
                "without DiffusionTrainer.Options.LabelColumnName) and SamplerOptions.Classifier is not set; leave LabelColumnName null.", nameof(options));
        if (resolved.Sampler.Classifier is not null && resolved.LabelColumnName is null)
            throw new ArgumentException(
                "SamplerOptions.Classifier is set, but ImageToImageOptions.LabelColumnName is null; classifier guidance steers each row towards " +
                "its label: name the label column.", nameof(options));
        return resolved;
    }

    private protected override int BatchSize => Sampler.BatchSize;

    private protected override IReadOnlyList<DataViewSchema.Column> CheckInput(DataViewSchema inputSchema)
    {
        var columns = new List<DataViewSchema.Column> { ImageMappingColumns.CheckImage(inputSchema, ImageColumnName, Model.ImageSize, Why) };
        if (_options.LabelColumnName is { } label) columns.Add(LabelColumn.Check(inputSchema, label).Column);
        return columns;
    }

    private protected override Func<long, ImageRequest> CreateReader(DataViewRow row)
    {
        var image = ImageMappingColumns.ImageReader(row, row.Schema[ImageColumnName], Model.ImageSize, Model.Channels, Why,
            _options.ConvertToGrayscale ? null : "ImageToImageOptions.ConvertToGrayscale");
        long current = 0;
        var label = _options.LabelColumnName is { } name
            ? LabelColumn.Reader(row, row.Schema[name], Model.RequestClassCount(Sampler), () => current)
            : null;
        return index =>
        {
            current = index;
            return new ImageRequest(index, image(index), null, label?.Invoke());
        };
    }

    private protected override byte[][] MapBatch(IReadOnlyList<ImageRequest> requests)
    {
        using var images = ImageRequest.Images(requests, Model.Channels, Model.ImageSize);
        var seeds = requests.Select(r => DiffusionModel.SeedOfRow(Sampler, r.Row)).ToArray();
        var classes = _options.LabelColumnName is null ? null : requests.Select(r => r.Class!.Value).ToArray();
        int startStep = SdeditSchedule.StartStep(Sampler.ResolveSteps(Model.Timesteps), _options.Strength);
        using var result = Model.Pipeline.Run(new SamplingRequest(seeds, Sampler) { Classes = classes, InitialImages = images, StartStep = startStep });
        return ImageTensorConverter.ToBgraPixels(result);
    }

    // ---- persistence ----

    private static VersionInfo GetVersionInfo() => new(
        modelSignature: "SDEDIT_T",
        verWrittenCur: 0x00010001,
        verReadableCur: 0x00010001,
        verWeCanReadBack: 0x00010001,
        loaderSignature: LoaderSignature,
        loaderAssemblyName: typeof(SdeditTransformer).Assembly.FullName);

    private protected override VersionInfo VersionInfo => GetVersionInfo();

    private protected override void SaveSettings(BinaryWriter writer)
    {
        // float: Strength; string: the sampler (SamplerSettings as JSON; Progress, CancellationToken, Engine and Classifier are not saved)
        writer.Write(_options.Strength);
        writer.Write(JsonSerializer.Serialize(Sampler.ToSettings(), DiffusionModelConfig.Json));
        // string: label column ("" = none); bool: ConvertToGrayscale
        writer.Write(_options.LabelColumnName ?? string.Empty);
        writer.Write(_options.ConvertToGrayscale);
    }

    private static SdeditTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        var (output, image) = LoadColumns(ctx, GetVersionInfo());
        float strength = ctx.Reader.ReadSingle();
        var sampler = JsonSerializer.Deserialize<SamplerSettings>(ctx.Reader.ReadString(), DiffusionModelConfig.Json)
            ?? throw new InvalidDataException("The SDEdit transformer's sampler settings are empty.");
        string label = ctx.Reader.ReadString();
        bool grayscale = ctx.Reader.ReadBoolean();
        var options = new ImageToImageOptions
        {
            Strength = strength, Sampler = sampler.ToOptions(), LabelColumnName = label.Length == 0 ? null : label, ConvertToGrayscale = grayscale,
        };
        var model = LoadModel(env, ctx);
        return new SdeditTransformer(env, model, output, image, options, ownsModel: true);
    }
}
