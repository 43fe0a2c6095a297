using System.Text.Json;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Training;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Transforms;
using Microsoft.ML.Diffusion.Columns;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Trains the small KL-regularised convolutional autoencoder of latent diffusion (Rombach et al. 2022, section 3.1 and
/// appendix G) on an image column and returns an <see cref="AutoencoderModel"/> with Encode/Decode. Reached as
/// <c>mlContext.Generative.Autoencoder(...)</c>; pass the model to <see cref="DiffusionTrainer.Options.Autoencoder"/> to train
/// a latent diffusion model.
/// </summary>
/// <remarks>
/// The loss is L1 reconstruction + <see cref="Options.KlWeight"/> x KL (<see cref="AutoencoderLoss"/>). LDM adds an LPIPS
/// perceptual term and a patch discriminator; LPIPS needs pretrained VGG16 weights, which are not available offline, so
/// neither is implemented. Progress goes to the MLContext log and to <see cref="Options.Progress"/>;
/// <see cref="Options.CancellationToken"/> stops training between two steps. With <see cref="Options.CheckpointDirectory"/> set,
/// checkpoints are written atomically and a later Fit with the same options resumes from the last one.
/// </remarks>
public sealed class AutoencoderTrainer : IEstimator<AutoencoderModel>
{
    /// <summary>The default column of reconstructed images.</summary>
    public const string DefaultOutputColumnName = DiffusionDefaults.ReconstructionColumnName;

    /// <summary>Options of <see cref="AutoencoderTrainer"/>.</summary>
    public sealed class Options : ITrainingRunOptions
    {
        /// <summary>The training images: an MLImage column or a Single pixel vector, as for <see cref="DiffusionTrainer.Options.ImageColumnName"/>.</summary>
        public string ImageColumnName { get; set; } = DiffusionDefaults.ImageColumnName;
        /// <summary>The column of reconstructed images the model's Transform adds.</summary>
        public string OutputColumnName { get; set; } = DefaultOutputColumnName;
        /// <summary>Image side in pixels; must be divisible by <see cref="DownsamplingFactor"/>.</summary>
        public int ImageSize { get; set; } = 32;
        /// <summary>1 (grayscale) or 3 (RGB).</summary>
        public int Channels { get; set; } = 3;
        /// <summary>For a grayscale model (Channels = 1): false (default) makes a color image (one whose R, G and B differ
        /// somewhere, or three ExtractPixels planes that differ) an error naming the column and row; true converts color images to
        /// their ITU-R BT.601 luma. Grayscale images (equal channels, as ConvertToGrayscale writes them) are accepted either way.</summary>
        public bool ConvertToGrayscale { get; set; }
        /// <summary>The latent grid is ImageSize / factor: 4 or 8 as in LDM (2 is also accepted).</summary>
        public int DownsamplingFactor { get; set; } = 4;
        /// <summary>Channels of the latent (LDM: 4).</summary>
        public int LatentChannels { get; set; } = 4;
        /// <summary>Width of the first level.</summary>
        public int BaseChannels { get; set; } = 32;
        /// <summary>Width multipliers, log2(factor) + 1 levels; null: [1, 2] for f = 2, [1, 2, 2] for f = 4, [1, 2, 2, 4] for f = 8.</summary>
        public int[]? ChannelMultipliers { get; set; }
        /// <summary>Residual blocks per encoder level (the decoder has one more).</summary>
        public int NumResBlocks { get; set; } = 1;
        /// <summary>GroupNorm groups.</summary>
        public int GroupNormGroups { get; set; } = 8;
        /// <summary>The weight beta of the KL term (LDM's kl_weight: 1e-6, a nearly unregularised latent).</summary>
        public double KlWeight { get; set; } = 1e-6;
        /// <summary>Adam learning rate.</summary>
        public float LearningRate { get; set; } = 1e-3f;
        /// <summary>Passes over the data.</summary>
        public int Epochs { get; set; } = 1;
        /// <summary>Images per optimizer step.</summary>
        public int BatchSize { get; set; } = 16;
        /// <summary>Stop after this many optimizer steps in all (null: run all epochs).</summary>
        public long? MaxSteps { get; set; }
        /// <summary>Rows held by the shuffle buffer (1 keeps the input order).</summary>
        public int ShuffleBufferSize { get; set; } = DiffusionDefaults.ShuffleBufferSize;
        /// <summary>Seed of weights, noise and data order; null takes one from the MLContext's seed.</summary>
        public int? Seed { get; set; }
        /// <summary>Steps between two log lines on the MLContext log.</summary>
        public int LogInterval { get; set; } = 50;
        /// <summary>When set: a checkpoint is written atomically every <see cref="CheckpointInterval"/> steps and at each epoch's end, and
        /// Fit resumes from it if present (with the same options; raising Epochs or MaxSteps continues the run), as for
        /// <see cref="DiffusionTrainer.Options.CheckpointDirectory"/>.</summary>
        public string? CheckpointDirectory { get; set; }
        /// <summary>Optimizer steps between checkpoints.</summary>
        public int CheckpointInterval { get; set; } = DiffusionDefaults.CheckpointInterval;
        /// <summary>Receives a report after every optimizer step (Loss: L1 summed per image + beta KL, averaged over the batch).</summary>
        public IProgress<TrainingProgress>? Progress { get; set; }
        /// <summary>Stops training between two steps (a checkpoint is written first when a directory is set).</summary>
        public CancellationToken CancellationToken { get; set; }

        internal AutoencoderConfig ToNetworkConfig() => new()
        {
            ImageSize = ImageSize, Channels = Channels, LatentChannels = LatentChannels, DownsamplingFactor = DownsamplingFactor,
            BaseChannels = BaseChannels, NumResBlocks = NumResBlocks, GroupNormGroups = GroupNormGroups,
            ChannelMultipliers = (ChannelMultipliers ?? AutoencoderConfig.DefaultMultipliers(DownsamplingFactor)).ToArray(),
        };
    }

    private readonly IHost _host;
    private readonly Options _options;

    /// <summary>Creates the trainer; prefer <c>mlContext.Generative.Autoencoder(...)</c>.</summary>
    public AutoencoderTrainer(IHostEnvironment env, Options options)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(options);
        _host = env.Register(nameof(AutoencoderTrainer));
        _options = options;
        Validate(options);
    }

    private static void Validate(Options o)
    {
        static void Positive(int value, string name)
        {
            if (value < 1) throw new ArgumentOutOfRangeException(name, value, $"AutoencoderTrainer.Options.{name} must be >= 1.");
        }
        if (string.IsNullOrWhiteSpace(o.ImageColumnName)) throw new ArgumentException("AutoencoderTrainer.Options.ImageColumnName must be set.", nameof(o.ImageColumnName));
        if (string.IsNullOrWhiteSpace(o.OutputColumnName)) throw new ArgumentException("AutoencoderTrainer.Options.OutputColumnName must be set.", nameof(o.OutputColumnName));
        if (o.Channels != 1 && o.Channels != 3)
            throw new ArgumentOutOfRangeException(nameof(o.Channels), o.Channels, "AutoencoderTrainer.Options.Channels must be 1 (grayscale) or 3 (RGB).");
        if (!AutoencoderConfig.SupportedFactors.Contains(o.DownsamplingFactor))
            throw new ArgumentOutOfRangeException(nameof(o.DownsamplingFactor), o.DownsamplingFactor, "AutoencoderTrainer.Options.DownsamplingFactor must be 4 or 8 (or 2).");
        Positive(o.ImageSize, nameof(o.ImageSize));
        if (o.ImageSize % o.DownsamplingFactor != 0)
            throw new ArgumentOutOfRangeException(nameof(o.ImageSize), o.ImageSize,
                $"AutoencoderTrainer.Options.ImageSize must be divisible by the DownsamplingFactor {o.DownsamplingFactor}; the latent grid is ImageSize / {o.DownsamplingFactor}.");
        Positive(o.Epochs, nameof(o.Epochs));
        Positive(o.BatchSize, nameof(o.BatchSize));
        Positive(o.ShuffleBufferSize, nameof(o.ShuffleBufferSize));
        Positive(o.LogInterval, nameof(o.LogInterval));
        Positive(o.CheckpointInterval, nameof(o.CheckpointInterval));
        if (!(o.LearningRate > 0 && float.IsFinite(o.LearningRate)))
            throw new ArgumentOutOfRangeException(nameof(o.LearningRate), o.LearningRate, "AutoencoderTrainer.Options.LearningRate must be a positive number.");
        if (!(o.KlWeight >= 0 && double.IsFinite(o.KlWeight)))
            throw new ArgumentOutOfRangeException(nameof(o.KlWeight), o.KlWeight, "AutoencoderTrainer.Options.KlWeight must be >= 0 (LDM uses 1e-6).");
        if (o.MaxSteps is long m && m < 1)
            throw new ArgumentOutOfRangeException(nameof(o.MaxSteps), m, "AutoencoderTrainer.Options.MaxSteps must be >= 1 when set.");
        o.ToNetworkConfig().Validate();
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        TrainingImageInput.Check(inputSchema, _options.ImageColumnName, _options.ImageSize, _options.Channels);
        return ImageMapping.OutputSchema(inputSchema, _options.OutputColumnName, _options.ImageSize);
    }

    /// <summary>Trains on the images of <paramref name="input"/> and returns the model.</summary>
    public AutoencoderModel Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var o = _options;
        var imageCol = TrainingImageInput.Check(input.Schema, o.ImageColumnName, o.ImageSize, o.Channels)
            .RejectColor(o.ConvertToGrayscale, "AutoencoderTrainer.Options.ConvertToGrayscale");
        var settings = TrainingRunSettings.From(o);
        settings.RequireRows(input.GetRowCount());
        var device = DeviceSelection.Select(_host);
        var netConfig = o.ToNetworkConfig();
        long seed = o.Seed ?? _host.Rand.Next();
        using var ch = _host.Start("Autoencoder training");
        var network = TrainerBase.CreateSeeded(seed, () => new KlAutoencoder(netConfig));
        try
        {
            network.to(device);
            using var loop = new AutoencoderTrainingLoop(network, o.LearningRate, o.KlWeight, seed, device);
            // The checkpoint identity: what the weights, the Adam state and the data order depend on.
            string identity = JsonSerializer.Serialize(new
            {
                Trainer = nameof(AutoencoderTrainer), Network = netConfig, o.KlWeight, o.LearningRate, o.BatchSize, o.ShuffleBufferSize,
            }, DiffusionModelConfig.Json);
            new Run(settings, loop, ch, o, device).Train(input, imageCol, null, 0, o.Channels * o.ImageSize * o.ImageSize, identity, seed);
            var config = new AutoencoderModelConfig
            {
                Network = netConfig, InputColumnName = o.ImageColumnName, OutputColumnName = o.OutputColumnName,
                KlWeight = o.KlWeight, TrainedSteps = loop.Step,
            };
            return new AutoencoderModel(_host, config, network, device);
        }
        catch
        {
            network.Dispose();
            throw;
        }
    }

    /// <summary>The autoencoder's step on a batch.</summary>
    private sealed class Run(TrainingRunSettings settings, AutoencoderTrainingLoop loop, IChannel ch, Options o, Device device)
        : TrainerBase<AutoencoderTrainingLoop>(settings, loop, ch)
    {
        protected override string Description
        {
            get
            {
                var c = Loop.Model.Config;
                return $"Training a {Loop.Model.ParameterCount:N0}-parameter KL autoencoder on '{o.ImageColumnName}' ({c.ImageSize}x{c.ImageSize}x{c.Channels} -> " +
                       $"{c.LatentChannels}x{c.LatentSize}x{c.LatentSize}), {o.Epochs} epoch(s) of batch {o.BatchSize}, beta = {o.KlWeight:G3}, on {device.type}.";
            }
        }

        protected override float TrainBatch(TrainingBatch batch)
        {
            using var x = batch.Images(o.Channels, o.ImageSize);
            return Loop.TrainStep(x);
        }

        protected override string StepDetails(double meanLoss) => $"L1 per pixel {Loop.LastL1:G4}";
    }
}
