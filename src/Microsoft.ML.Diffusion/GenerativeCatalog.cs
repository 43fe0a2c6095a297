using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Columns;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Generative models in ML.NET: <c>mlContext.Generative.Diffusion(...)</c> trains a diffusion model,
/// <c>mlContext.Generative.CreateRequests(...)</c> makes the rows it generates images for, <c>Autoencoder</c> trains the
/// first stage of latent diffusion, <c>NoisyClassifier</c> trains the classifier of classifier guidance, <c>Inpaint</c>, <c>Upscale</c> and
/// <c>ImageToImage</c> fill, upscale and translate (SDEdit) images with a trained model, <c>CreateMask</c> makes the built-in inpainting masks.
/// </summary>
public sealed class GenerativeCatalog
{
    internal GenerativeCatalog(MLContext context) => Context = context;

    internal MLContext Context { get; }

    /// <summary>A diffusion trainer with all options.</summary>
    public DiffusionTrainer Diffusion(DiffusionTrainer.Options options) => new(Context, options);

    /// <summary>A diffusion trainer with the common options; the rest keep their defaults (<see cref="DiffusionDefaults"/>).</summary>
    /// <param name="outputColumnName">Column the trained model writes generated images to.</param>
    /// <param name="imageColumnName">Column of training images: MLImage, or float pixels as ExtractPixels writes them (planar RGB, 0..255).</param>
    /// <param name="imageSize">Image side in pixels.</param>
    /// <param name="channels">1 (grayscale) or 3 (RGB).</param>
    /// <param name="epochs">Passes over the data.</param>
    /// <param name="batchSize">Images per optimizer step.</param>
    /// <param name="timesteps">T, diffusion timesteps.</param>
    /// <param name="schedule">Beta schedule.</param>
    /// <param name="attentionResolutions">Feature-map sides that get self-attention; null (default) derives them from
    /// <paramref name="imageSize"/>: the lowest resolution the U-Net reaches (7 for 28 pixels, 8 for 32, 4 for 16).</param>
    public DiffusionTrainer Diffusion(
        string outputColumnName = DiffusionDefaults.OutputColumnName,
        string imageColumnName = DiffusionDefaults.ImageColumnName,
        int imageSize = DiffusionDefaults.ImageSize,
        int channels = DiffusionDefaults.Channels,
        int epochs = DiffusionDefaults.Epochs,
        int batchSize = DiffusionDefaults.BatchSize,
        int timesteps = DiffusionDefaults.Timesteps,
        NoiseSchedule schedule = NoiseSchedule.Linear,
        int[]? attentionResolutions = null) =>
        new(Context, new DiffusionTrainer.Options
        {
            OutputColumnName = outputColumnName, ImageColumnName = imageColumnName, ImageSize = imageSize, Channels = channels,
            Epochs = epochs, BatchSize = batchSize, Timesteps = timesteps, Schedule = schedule, AttentionResolutions = attentionResolutions,
        });

    /// <summary>A KL autoencoder trainer (latent diffusion's first stage, Rombach et al. 2022) with all options.</summary>
    public AutoencoderTrainer Autoencoder(AutoencoderTrainer.Options options) => new(Context, options);

    /// <summary>A KL autoencoder trainer with the common options; the rest keep their defaults (see <see cref="AutoencoderTrainer.Options"/>).</summary>
    /// <param name="outputColumnName">Column the trained model writes reconstructed images to.</param>
    /// <param name="imageColumnName">Column of training images (MLImage).</param>
    /// <param name="imageSize">Image side in pixels, divisible by <paramref name="downsamplingFactor"/>.</param>
    /// <param name="channels">1 (grayscale) or 3 (RGB).</param>
    /// <param name="downsamplingFactor">4 or 8: the latent grid is imageSize / factor.</param>
    /// <param name="latentChannels">Channels of the latent (LDM: 4).</param>
    /// <param name="epochs">Passes over the data.</param>
    /// <param name="batchSize">Images per optimizer step.</param>
    public AutoencoderTrainer Autoencoder(
        string outputColumnName = AutoencoderTrainer.DefaultOutputColumnName,
        string imageColumnName = DiffusionDefaults.ImageColumnName,
        int imageSize = 32,
        int channels = 3,
        int downsamplingFactor = 4,
        int latentChannels = 4,
        int epochs = 1,
        int batchSize = 16) =>
        new(Context, new AutoencoderTrainer.Options
        {
            OutputColumnName = outputColumnName, ImageColumnName = imageColumnName, ImageSize = imageSize, Channels = channels,
            DownsamplingFactor = downsamplingFactor, LatentChannels = latentChannels, Epochs = epochs, BatchSize = batchSize,
        });

    /// <summary>A noisy-classifier trainer for classifier guidance (Dhariwal &amp; Nichol 2021) with all options.</summary>
    public NoisyClassifierTrainer NoisyClassifier(NoisyClassifierTrainer.Options options) => new(Context, options);

    /// <summary>
    /// A trainer of the time-conditioned classifier p(y | x_t, t) that guides <paramref name="diffusionModel"/> towards a class
    /// (classifier guidance, Dhariwal &amp; Nichol 2021): set the trained model as <see cref="SamplerOptions.Classifier"/>.
    /// The rest of the options keep their defaults (see <see cref="NoisyClassifierTrainer.Options"/>).
    /// </summary>
    /// <param name="diffusionModel">The pixel-space diffusion model to guide (its schedule, T, image size and channels are used).</param>
    /// <param name="labelColumnName">Class labels: a key column, or integer numbers with <paramref name="numClasses"/> set.</param>
    /// <param name="imageColumnName">Training images (MLImage, or float pixels as ExtractPixels writes them).</param>
    /// <param name="numClasses">Classes of a number label column (labels 0..numClasses - 1); null for a key column.</param>
    /// <param name="epochs">Passes over the data.</param>
    /// <param name="batchSize">Images per optimizer step.</param>
    public NoisyClassifierTrainer NoisyClassifier(
        DiffusionModel diffusionModel,
        string labelColumnName = NoisyClassifierTrainer.DefaultLabelColumnName,
        string imageColumnName = DiffusionDefaults.ImageColumnName,
        int? numClasses = null,
        int epochs = 1,
        int batchSize = 64) =>
        new(Context, new NoisyClassifierTrainer.Options
        {
            DiffusionModel = diffusionModel, LabelColumnName = labelColumnName, ImageColumnName = imageColumnName,
            NumClasses = numClasses, Epochs = epochs, BatchSize = batchSize,
        });

    /// <summary>
    /// <paramref name="count"/> generation requests: one row each, with a UInt32 seed column holding
    /// <paramref name="seed"/>, <paramref name="seed"/> + 1, ...
    /// </summary>
    public IDataView CreateRequests(int count, uint seed = 0, string seedColumnName = DiffusionDefaults.SeedColumnName)
    {
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count), count, "count must be >= 0.");
        var rows = Enumerable.Range(0, count).Select(i => new SeedRow { Seed = unchecked(seed + (uint)i) }).ToArray();
        var definition = SchemaDefinition.Create(typeof(SeedRow));
        definition[nameof(SeedRow.Seed)].ColumnName = seedColumnName;
        return Context.Data.LoadFromEnumerable(rows, definition);
    }

    /// <summary>
    /// <paramref name="labels"/>.Count generation requests for a class-conditional model: row i has seed
    /// <paramref name="seed"/> + i and class label <paramref name="labels"/>[i] (an Int32 column, annotated so that a model
    /// without class conditioning rejects it). The model applies its sampler's <see cref="SamplerOptions.GuidanceScale"/>.
    /// </summary>
    /// <param name="count">Rows; must equal labels.Count.</param>
    /// <param name="seed">Seed of the first row.</param>
    /// <param name="labels">One class index (0..NumClasses - 1) per row.</param>
    /// <param name="seedColumnName">The seed column's name.</param>
    /// <param name="labelColumnName">The label column's name: the model's <see cref="DiffusionModel.LabelColumnName"/>.</param>
    public IDataView CreateRequests(int count, uint seed, IReadOnlyList<int> labels, string seedColumnName = DiffusionDefaults.SeedColumnName,
        string labelColumnName = DiffusionDefaults.LabelColumnName)
    {
        ArgumentNullException.ThrowIfNull(labels);
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count), count, "count must be >= 0.");
        if (labels.Count != count)
            throw new ArgumentException($"{labels.Count} labels were given for {count} requests; expected one label per request.", nameof(labels));
        for (int i = 0; i < count; i++)
            if (labels[i] < 0)
                throw new ArgumentOutOfRangeException(nameof(labels), labels[i], $"Label {labels[i]} (request {i}) is negative; expected a class index >= 0.");
        var rows = Enumerable.Range(0, count).Select(i => new LabeledSeedRow { Seed = unchecked(seed + (uint)i), Label = labels[i] }).ToArray();
        var definition = SchemaDefinition.Create(typeof(LabeledSeedRow));
        var seedColumn = definition[nameof(LabeledSeedRow.Seed)];
        var labelColumn = definition[nameof(LabeledSeedRow.Label)];
        seedColumn.ColumnName = seedColumnName;
        labelColumn.ColumnName = labelColumnName;
        labelColumn.AddAnnotation(LabelColumn.RequestAnnotation, true, BooleanDataViewType.Instance);
        return Context.Data.LoadFromEnumerable(rows, definition);
    }

    /// <summary>
    /// Inpainting with RePaint (Lugmayr et al. 2022): fills the masked pixels of each image with <paramref name="model"/>,
    /// keeping the known pixels exactly.
    /// </summary>
    /// <param name="model">An unconditional diffusion model of the images' size and channels.</param>
    /// <param name="outputColumnName">The column of filled images (model size).</param>
    /// <param name="imageColumnName">The column of images to fill (MLImage, model size).</param>
    /// <param name="maskColumnName">A mask column: an MLImage (white keeps, black fills) or a Boolean/Single vector of one value per
    /// pixel (true/1 keeps); null uses <see cref="InpaintOptions.Mask"/>.</param>
    /// <param name="options">RePaint settings; null uses the defaults (250 steps, jump length 10, 10 resamplings).</param>
    public InpaintingEstimator Inpaint(DiffusionModel model, string outputColumnName, string imageColumnName, string? maskColumnName, InpaintOptions? options) =>
        new(Context, model, outputColumnName, imageColumnName, maskColumnName, options);

    /// <summary>Inpainting with RePaint, with the common settings (see the <see cref="InpaintOptions"/> overload).</summary>
    /// <param name="model">An unconditional diffusion model of the images' size and channels.</param>
    /// <param name="outputColumnName">The column of filled images.</param>
    /// <param name="imageColumnName">The column of images to fill.</param>
    /// <param name="maskColumnName">The mask column; null uses the built-in <paramref name="mask"/>.</param>
    /// <param name="mask">The built-in mask used without a mask column.</param>
    /// <param name="steps">Sampling steps; null means min(250, T).</param>
    /// <param name="jumpLength">RePaint's jump length j.</param>
    /// <param name="resamplings">RePaint's resamplings r (1 = none).</param>
    /// <param name="seed">Seed of the first row (row i uses seed + i).</param>
    public InpaintingEstimator Inpaint(DiffusionModel model, string outputColumnName = "Inpainted", string imageColumnName = DiffusionDefaults.ImageColumnName,
        string? maskColumnName = null, InpaintMaskKind mask = InpaintMaskKind.Thin, int? steps = null, int jumpLength = 10,
        int resamplings = 10, uint seed = 0) =>
        new(Context, model, outputColumnName, imageColumnName, maskColumnName,
            new InpaintOptions { Mask = mask, Steps = steps, JumpLength = jumpLength, Resamplings = resamplings, Seed = seed });

    /// <summary>
    /// Super-resolution with <paramref name="model"/>. With an unconditional model (RePaint-style), each input of size
    /// model / <see cref="UpscaleOptions.Factor"/> becomes the known pixels of every Factor-th row and column of the model's
    /// grid, and the rest is sampled. With a super-resolution model (trained with <c>Conditioning.LowResolution(Factor)</c>,
    /// SR3), the network is conditioned on the bicubic upsampling of the input and samples with its default sampler.
    /// </summary>
    /// <param name="model">A diffusion model of the output size and the images' channels: unconditional, or a super-resolution model for this factor.</param>
    /// <param name="outputColumnName">The column of upscaled images (model size).</param>
    /// <param name="imageColumnName">The column of low-resolution images (model size / Factor).</param>
    /// <param name="options">Factor (2 or 4) and RePaint settings; null uses the defaults (factor 2).</param>
    public UpscalingEstimator Upscale(DiffusionModel model, string outputColumnName, string imageColumnName, UpscaleOptions? options) =>
        new(Context, model, outputColumnName, imageColumnName, options);

    /// <summary>Super-resolution with the common settings (see the <see cref="UpscaleOptions"/> overload).</summary>
    /// <param name="model">A diffusion model of the output size: unconditional, or a super-resolution model for this factor.</param>
    /// <param name="outputColumnName">The column of upscaled images.</param>
    /// <param name="imageColumnName">The column of low-resolution images.</param>
    /// <param name="factor">2 or 4.</param>
    /// <param name="steps">Sampling steps; null means min(250, T).</param>
    /// <param name="jumpLength">RePaint's jump length j.</param>
    /// <param name="resamplings">RePaint's resamplings r (1 = none).</param>
    /// <param name="seed">Seed of the first row (row i uses seed + i).</param>
    public UpscalingEstimator Upscale(DiffusionModel model, string outputColumnName = "Upscaled", string imageColumnName = DiffusionDefaults.ImageColumnName,
        int factor = 2, int? steps = null, int jumpLength = 10, int resamplings = 10, uint seed = 0) =>
        new(Context, model, outputColumnName, imageColumnName,
            new UpscaleOptions { Factor = factor, Steps = steps, JumpLength = jumpLength, Resamplings = resamplings, Seed = seed });

    /// <summary>
    /// Image-to-image translation with SDEdit (Meng et al. 2022): each image is noised to a level set by <see cref="ImageToImageOptions.Strength"/>
    /// and denoised by the last steps of the sampler's loop, as diffusers' StableDiffusionImg2ImgPipeline does (N steps, strength s:
    /// the last min(int(N s), N) run). 0 returns the input, 1 generates from noise.
    /// </summary>
    /// <param name="model">A diffusion model of the images' size and channels (pixel-space or latent, unconditional or class-conditional).</param>
    /// <param name="outputColumnName">The column of translated images (model size).</param>
    /// <param name="imageColumnName">The column of input images (MLImage, model size).</param>
    /// <param name="options">Strength, sampler, label column; null uses the defaults (strength 0.8, the model's default sampler).</param>
    public SdeditEstimator ImageToImage(DiffusionModel model, string outputColumnName, string imageColumnName, ImageToImageOptions? options) =>
        new(Context, model, outputColumnName, imageColumnName, options);

    /// <summary>Image-to-image translation with SDEdit, with the common settings (see the <see cref="ImageToImageOptions"/> overload).</summary>
    /// <param name="model">A diffusion model of the images' size and channels.</param>
    /// <param name="outputColumnName">The column of translated images.</param>
    /// <param name="imageColumnName">The column of input images.</param>
    /// <param name="strength">How much of each image is replaced, in [0, 1] (diffusers' default 0.8).</param>
    /// <param name="sampler">The sampler; null keeps the model's default sampler.</param>
    /// <param name="steps">N, the steps of a whole loop (only the last int(N strength) run); null keeps the model's sampler's steps, or
    /// takes the default of the sampler given in <paramref name="sampler"/>.</param>
    /// <param name="seed">Seed of the first row (row i uses seed + i).</param>
    public SdeditEstimator ImageToImage(DiffusionModel model, string outputColumnName = "Edited", string imageColumnName = DiffusionDefaults.ImageColumnName,
        float strength = ImageToImageOptions.DefaultStrength, SamplerKind? sampler = null, int? steps = null, uint seed = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        var options = model.DefaultSampler;
        if (sampler is SamplerKind kind && kind != options.Sampler)
        {
            options.Sampler = kind;
            options.Steps = null;       // the new sampler's default, unless given
        }
        if (steps is not null) options.Steps = steps;
        options.Seed = seed;
        return new(Context, model, outputColumnName, imageColumnName, new ImageToImageOptions { Strength = strength, Sampler = options });
    }

    /// <summary>A built-in inpainting mask as a <paramref name="size"/> x <paramref name="size"/> image: white keeps the pixel, black fills it.</summary>
    /// <param name="kind">Which mask (the RePaint paper's set).</param>
    /// <param name="size">Side in pixels, at least 4.</param>
    /// <param name="seed">Seed of the random strokes of Thin and Wide masks.</param>
    public MLImage CreateMask(InpaintMaskKind kind, int size, int seed = 0) => InpaintMasks.CreateImage(kind, size, seed);

    /// <summary>
    /// Loads a model zip saved with <c>mlContext.Model.Save</c>, like <c>mlContext.Model.Load</c>, but a damaged, truncated,
    /// forged or too new file fails with an <see cref="InvalidDataException"/> whose message names the file and what is wrong
    /// (ML.NET itself reports a component's error wrapped in a TargetInvocationException, and a damaged zip without its name).
    /// </summary>
    /// <param name="path">The model zip.</param>
    /// <param name="inputSchema">The input schema saved with the model.</param>
    public ITransformer LoadModel(string path, out DataViewSchema inputSchema) =>
        Transforms.ModelFileLoader.Load(Context, path, out inputSchema);

    /// <summary>Loads a <see cref="DiffusionModel"/> saved alone or in a pipeline (a TransformerChain such as LoadImages -&gt;
    /// ResizeImages -&gt; ... -&gt; Diffusion, nested chains and inpainting/upscaling transformers included; the last model found
    /// is returned, see <see cref="DiffusionTransformerExtensions.GetDiffusionModel"/>), with the errors of <see cref="LoadModel"/>.
    /// Every failure names the file and what was expected: <see cref="FileNotFoundException"/> for a missing file, otherwise
    /// <see cref="InvalidDataException"/> (not a zip, truncated, a zip of other files, or a model without a DiffusionModel,
    /// e.g. a saved NormalizeMinMax pipeline).</summary>
    /// <param name="path">The model zip.</param>
    public DiffusionModel LoadDiffusionModel(string path) =>
        Transforms.ModelFileLoader.LoadDiffusionModel(Context, path, out _);

    private sealed class SeedRow
    {
        public uint Seed { get; set; }
    }

    private sealed class LabeledSeedRow
    {
        public uint Seed { get; set; }
        public int Label { get; set; }
    }
}

/// <summary>Adds <c>Generative</c> to <see cref="MLContext"/>.</summary>
public static class GenerativeCatalogExtensions
{
    extension(MLContext mlContext)
    {
        /// <summary>Generative models: diffusion training, generation requests.</summary>
        public GenerativeCatalog Generative => new(mlContext);
    }

    /// <summary>The generative catalog, for C# versions without extension properties.</summary>
    public static GenerativeCatalog GetGenerativeCatalog(this MLContext mlContext) => new(mlContext);
}
