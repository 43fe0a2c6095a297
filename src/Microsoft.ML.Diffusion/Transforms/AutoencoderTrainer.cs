using System.Diagnostics;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Diffusion.Training;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

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
/// <see cref="Options.CancellationToken"/> stops training between two steps.
/// </remarks>
public sealed class AutoencoderTrainer : IEstimator<AutoencoderModel>
{
    /// <summary>The default column of reconstructed images.</summary>
    public const string DefaultOutputColumnName = "Reconstruction";

    /// <summary>Options of <see cref="AutoencoderTrainer"/>.</summary>
    public sealed class Options
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
        /// <summary>Receives a report after every optimizer step (Loss: L1 summed per image + beta KL, averaged over the batch).</summary>
        public IProgress<TrainingProgress>? Progress { get; set; }
        /// <summary>Stops training between two steps.</summary>
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
        long? rowCount = input.GetRowCount();
        if (rowCount is long known && known < o.BatchSize)
            throw new InvalidOperationException(
                $"Column '{o.ImageColumnName}': the input has {known} rows, fewer than BatchSize = {o.BatchSize}; lower BatchSize or add images.");
        var device = DeviceSelection.Select(_host);
        var netConfig = o.ToNetworkConfig();
        long seed = o.Seed ?? _host.Rand.Next();
        using var ch = _host.Start("Autoencoder training");
        KlAutoencoder network;
        lock (DiffusionTrainer.TorchGlobalSeed)
        {
            torch.manual_seed(seed);   // weight initialisation uses libtorch's global generator
            network = new KlAutoencoder(netConfig);
        }
        try
        {
            network.to(device);
            long steps = Train(input, imageCol, network, seed, device, ch);
            var config = new AutoencoderModelConfig
            {
                Network = netConfig, InputColumnName = o.ImageColumnName, OutputColumnName = o.OutputColumnName,
                KlWeight = o.KlWeight, TrainedSteps = steps,
            };
            return new AutoencoderModel(_host, config, network, device);
        }
        catch
        {
            network.Dispose();
            throw;
        }
    }

    private long Train(IDataView input, TrainingImageInput imageCol, KlAutoencoder network, long seed, Device device, IChannel ch)
    {
        var o = _options;
        using var loop = new AutoencoderTrainingLoop(network, o.LearningRate, o.KlWeight, seed, device);
        long? rowCount = input.GetRowCount();
        long? totalSteps = rowCount is long rc ? (rc + o.BatchSize - 1) / o.BatchSize * o.Epochs : null;
        if (o.MaxSteps is long ms) totalSteps = totalSteps is long ts ? Math.Min(ts, ms) : ms;
        var c = network.Config;
        ch.Info($"Training a {network.ParameterCount:N0}-parameter KL autoencoder on '{o.ImageColumnName}' ({c.ImageSize}x{c.ImageSize}x{c.Channels} -> " +
                $"{c.LatentChannels}x{c.LatentSize}x{c.LatentSize}), {o.Epochs} epoch(s) of batch {o.BatchSize}, beta = {o.KlWeight:G3}, on {device.type}.");
        int per = o.Channels * o.ImageSize * o.ImageSize;
        var watch = Stopwatch.StartNew();
        long images = 0;
        bool stopped = false;
        for (int epoch = 0; epoch < o.Epochs && !stopped; epoch++)
        {
            double lossSum = 0;
            long lossCount = 0, rows = 0;
            var batch = new float[o.BatchSize * per];
            int filled = 0;
            foreach (var (row, _) in DiffusionTrainer.StreamRows(input, imageCol, null, 0, per, seed + epoch, o.ShuffleBufferSize, o.CancellationToken))
            {
                rows++;
                row.CopyTo(batch, filled * per);
                if (++filled < o.BatchSize) continue;
                RunBatch(filled);
                filled = 0;
                if (stopped) break;
            }
            if (rows < o.BatchSize)
                throw new InvalidOperationException(
                    $"Column '{o.ImageColumnName}': the input has {rows} rows, fewer than BatchSize = {o.BatchSize}; lower BatchSize or add images.");
            if (!stopped && filled > 0) RunBatch(filled);
            ch.Info($"Epoch {epoch + 1}/{o.Epochs} done: mean loss {(lossCount > 0 ? lossSum / lossCount : double.NaN):G5}, step {loop.Step}.");

            void RunBatch(int count)
            {
                o.CancellationToken.ThrowIfCancellationRequested();
                float loss;
                using (var x = torch.tensor(batch.AsSpan(0, count * per).ToArray(), new long[] { count, o.Channels, o.ImageSize, o.ImageSize }))
                {
                    try
                    {
                        loss = loop.TrainStep(x);
                    }
                    catch (NonFiniteLossException e)
                    {
                        ch.Error(e.Message);
                        throw;
                    }
                }
                images += count;
                lossSum += loss;
                lossCount++;
                double ips = images / Math.Max(1e-9, watch.Elapsed.TotalSeconds);
                o.Progress?.Report(new TrainingProgress(epoch + 1, o.Epochs, loop.Step, totalSteps, loss, (float)(lossSum / lossCount), ips));
                if (loop.Step % o.LogInterval == 0)
                    ch.Info($"epoch {epoch + 1}/{o.Epochs} step {loop.Step}{(totalSteps is long t ? $"/{t}" : "")}: loss {loss:G5} " +
                            $"(L1 per pixel {loop.LastL1:G4}), {ips:F1} img/s");
                if (o.MaxSteps is long max && loop.Step >= max) stopped = true;
            }
        }
        ch.Info($"Trained {loop.Step} steps in {watch.Elapsed.TotalSeconds:F1} s.");
        return loop.Step;
    }
}
