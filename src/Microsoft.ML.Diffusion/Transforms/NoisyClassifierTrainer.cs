using System.Text.Json;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Training;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Columns;
using Microsoft.ML.Diffusion.Transforms;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Trains the time-conditioned classifier p_phi(y | x_t, t) of classifier guidance (Dhariwal &amp; Nichol 2021, section 4) for a
/// trained <see cref="DiffusionModel"/>: the U-Net's encoder half with a pooling head (<see cref="NoisyClassifierNetwork"/>),
/// trained with cross-entropy and AdamW on images noised by the diffusion model's own schedule (DDPM eq. 4, t ~ U{0..T-1}).
/// Reached as <c>mlContext.Generative.NoisyClassifier(...)</c>; pass the model to <see cref="SamplerOptions.Classifier"/> to
/// guide sampling. Progress goes to the MLContext log and <see cref="Options.Progress"/>; <see cref="Options.CancellationToken"/>
/// stops training between two steps. With <see cref="Options.CheckpointDirectory"/> set, checkpoints are written atomically and a
/// later Fit with the same options resumes from the last one.
/// </summary>
public sealed class NoisyClassifierTrainer : IEstimator<NoisyClassifierModel>
{
    /// <summary>The default label column.</summary>
    public const string DefaultLabelColumnName = DiffusionDefaults.LabelColumnName;
    /// <summary>The default predicted-label column of the trained model.</summary>
    public const string DefaultPredictedLabelColumnName = DiffusionDefaults.PredictedLabelColumnName;
    /// <summary>The default score column (class probabilities) of the trained model.</summary>
    public const string DefaultScoreColumnName = DiffusionDefaults.ScoreColumnName;

    /// <summary>Options of <see cref="NoisyClassifierTrainer"/>.</summary>
    public sealed class Options : ITrainingRunOptions
    {
        /// <summary>The diffusion model to guide: its noise schedule, T, image size and channels are used. Required; a latent
        /// diffusion model is not supported (the classifier would have to see latents).</summary>
        public DiffusionModel? DiffusionModel { get; set; }
        /// <summary>The training images: an MLImage column or a Single pixel vector, as for <see cref="DiffusionTrainer.Options.ImageColumnName"/>.</summary>
        public string ImageColumnName { get; set; } = DiffusionDefaults.ImageColumnName;
        /// <summary>The class labels: a key type (value k = class k - 1) or an integer-valued number column (class index; then set
        /// <see cref="NumClasses"/>), like <see cref="DiffusionTrainer.Options.LabelColumnName"/>.</summary>
        public string LabelColumnName { get; set; } = DefaultLabelColumnName;
        /// <summary>Classes of a number label column (labels 0..NumClasses - 1); null for a key column (its key count is used).</summary>
        public int? NumClasses { get; set; }
        /// <summary>The predicted-label column the model's Transform adds.</summary>
        public string PredictedLabelColumnName { get; set; } = DefaultPredictedLabelColumnName;
        /// <summary>The score column (softmax over the classes) the model's Transform adds.</summary>
        public string ScoreColumnName { get; set; } = DefaultScoreColumnName;
        /// <summary>Width of the first level.</summary>
        public int BaseChannels { get; set; } = 32;
        /// <summary>Width multipliers per level; null: the diffusion model's U-Net's.</summary>
        public int[]? ChannelMultipliers { get; set; }
        /// <summary>Residual blocks per level (guided-diffusion's classifiers use 2-4; 1 keeps it small).</summary>
        public int NumResBlocks { get; set; } = 1;
        /// <summary>Feature-map sides with self-attention; null: the diffusion model's U-Net's.</summary>
        public int[]? AttentionResolutions { get; set; }
        /// <summary>GroupNorm groups.</summary>
        public int GroupNormGroups { get; set; } = 8;
        /// <summary>Passes over the data.</summary>
        public int Epochs { get; set; } = 1;
        /// <summary>Images per optimizer step.</summary>
        public int BatchSize { get; set; } = 64;
        /// <summary>AdamW learning rate (guided-diffusion's classifier: 3e-4).</summary>
        public float LearningRate { get; set; } = 3e-4f;
        /// <summary>AdamW decoupled weight decay (guided-diffusion's classifier: 0.05).</summary>
        public float WeightDecay { get; set; } = 0.05f;
        /// <summary>Stop after this many optimizer steps in all (null: run all epochs).</summary>
        public long? MaxSteps { get; set; }
        /// <summary>Rows held by the shuffle buffer (1 keeps the input order).</summary>
        public int ShuffleBufferSize { get; set; } = DiffusionDefaults.ShuffleBufferSize;
        /// <summary>Seed of the weights, timesteps, noise and data order; null takes one from the MLContext's seed.</summary>
        public int? Seed { get; set; }
        /// <summary>Steps between two log lines on the MLContext log.</summary>
        public int LogInterval { get; set; } = 50;
        /// <summary>When set: a checkpoint is written atomically every <see cref="CheckpointInterval"/> steps and at each epoch's end, and
        /// Fit resumes from it if present (with the same options; raising Epochs or MaxSteps continues the run), as for
        /// <see cref="DiffusionTrainer.Options.CheckpointDirectory"/>.</summary>
        public string? CheckpointDirectory { get; set; }
        /// <summary>Optimizer steps between checkpoints.</summary>
        public int CheckpointInterval { get; set; } = DiffusionDefaults.CheckpointInterval;
        /// <summary>Receives a report after every optimizer step (Loss: the batch's mean cross-entropy).</summary>
        public IProgress<TrainingProgress>? Progress { get; set; }
        /// <summary>Stops training between two steps (a checkpoint is written first when a directory is set).</summary>
        public CancellationToken CancellationToken { get; set; }
        /// <summary>For a grayscale diffusion model (Channels = 1): false (default) makes a color image (one whose R, G and B differ
        /// somewhere, or three ExtractPixels planes that differ) an error naming the column and row; true converts color images to
        /// their ITU-R BT.601 luma. Grayscale images (equal channels, as ConvertToGrayscale writes them) are accepted either way.</summary>
        public bool ConvertToGrayscale { get; set; }

        internal NoisyClassifierConfig ToNetworkConfig(DiffusionModel model, int numClasses) => new()
        {
            ImageSize = model.ImageSize, InChannels = model.Channels, BaseChannels = BaseChannels,
            ChannelMultipliers = (ChannelMultipliers ?? model.Config.Network.ChannelMultipliers).ToArray(),
            NumResBlocks = NumResBlocks,
            AttentionResolutions = (AttentionResolutions ?? model.Config.Network.AttentionResolutions).ToArray(),
            GroupNormGroups = GroupNormGroups, NumClasses = numClasses,
        };
    }

    private readonly IHost _host;
    private readonly Options _options;

    /// <summary>Creates the trainer; prefer <c>mlContext.Generative.NoisyClassifier(...)</c>.</summary>
    public NoisyClassifierTrainer(IHostEnvironment env, Options options)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(options);
        _host = env.Register(nameof(NoisyClassifierTrainer));
        _options = options;
        Validate(options);
    }

    private static void Validate(Options o)
    {
        static void Positive(int value, string name)
        {
            if (value < 1) throw new ArgumentOutOfRangeException(name, value, $"NoisyClassifierTrainer.Options.{name} is {value}; expected >= 1.");
        }
        var model = o.DiffusionModel ?? throw new ArgumentNullException(nameof(o.DiffusionModel),
            "NoisyClassifierTrainer.Options.DiffusionModel is null; expected the trained diffusion model to guide (its schedule, T, image size and channels are used).");
        if (model.Latent is not null)
            throw new ArgumentException(
                $"NoisyClassifierTrainer.Options.DiffusionModel is a latent diffusion model ({model.Latent.LatentChannels}x{model.Config.SampleSize}x{model.Config.SampleSize} latents); " +
                "classifier guidance is not supported for latent models (the classifier would have to be trained on noisy latents). Use a pixel-space model.",
                nameof(o.DiffusionModel));
        if (model.Config.ClassifierGuidanceUnsupported is string reason)
            throw new NotSupportedException($"NoisyClassifierTrainer.Options.DiffusionModel is {reason}: classifier guidance is not supported for it.");
        if (model.Conditioning is not null)
            throw new ArgumentException(
                $"NoisyClassifierTrainer.Options.DiffusionModel is a super-resolution model (Conditioning {model.Conditioning}); classifier guidance needs a model that generates from noise.",
                nameof(o.DiffusionModel));
        foreach (var (name, value) in new[] { (nameof(o.ImageColumnName), o.ImageColumnName), (nameof(o.LabelColumnName), o.LabelColumnName),
                     (nameof(o.PredictedLabelColumnName), o.PredictedLabelColumnName), (nameof(o.ScoreColumnName), o.ScoreColumnName) })
        {
            if (string.IsNullOrWhiteSpace(value))
                throw new ArgumentException($"NoisyClassifierTrainer.Options.{name} is '{value}'; expected a column name.", name);
        }
        if (o.ScoreColumnName == o.PredictedLabelColumnName)
            throw new ArgumentException($"NoisyClassifierTrainer.Options.ScoreColumnName and PredictedLabelColumnName are both '{o.ScoreColumnName}'; expected two different columns.",
                nameof(o.ScoreColumnName));
        if (o.NumClasses is int nc && (nc < 2 || nc > UNetConfig.MaxClasses))
            throw new ArgumentOutOfRangeException(nameof(o.NumClasses), nc, $"NoisyClassifierTrainer.Options.NumClasses is {nc}; expected 2..{UNetConfig.MaxClasses} when set.");
        Positive(o.Epochs, nameof(o.Epochs));
        Positive(o.BatchSize, nameof(o.BatchSize));
        Positive(o.ShuffleBufferSize, nameof(o.ShuffleBufferSize));
        Positive(o.LogInterval, nameof(o.LogInterval));
        Positive(o.CheckpointInterval, nameof(o.CheckpointInterval));
        if (!(o.LearningRate > 0 && float.IsFinite(o.LearningRate)))
            throw new ArgumentOutOfRangeException(nameof(o.LearningRate), o.LearningRate, $"NoisyClassifierTrainer.Options.LearningRate is {o.LearningRate}; expected a positive number.");
        if (!(o.WeightDecay >= 0 && float.IsFinite(o.WeightDecay)))
            throw new ArgumentOutOfRangeException(nameof(o.WeightDecay), o.WeightDecay, $"NoisyClassifierTrainer.Options.WeightDecay is {o.WeightDecay}; expected a number >= 0.");
        if (o.MaxSteps is long m && m < 1)
            throw new ArgumentOutOfRangeException(nameof(o.MaxSteps), m, $"NoisyClassifierTrainer.Options.MaxSteps is {m}; expected >= 1 when set.");
        o.ToNetworkConfig(model, o.NumClasses ?? 2).Validate();
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var model = _options.DiffusionModel!;
        TrainingImageInput.Check(inputSchema, _options.ImageColumnName, model.ImageSize, model.Channels);
        LabelColumn.Check(inputSchema, _options.LabelColumnName);
        var columns = inputSchema.ToDictionary(c => c.Name);
        columns[_options.PredictedLabelColumnName] = new SchemaShape.Column(_options.PredictedLabelColumnName, SchemaShape.Column.VectorKind.Scalar,
            NumberDataViewType.UInt32, true);
        columns[_options.ScoreColumnName] = new SchemaShape.Column(_options.ScoreColumnName, SchemaShape.Column.VectorKind.Vector,
            NumberDataViewType.Single, false);
        return new SchemaShape(columns.Values);
    }

    /// <summary>The label column and its number of classes.</summary>
    private (DataViewSchema.Column Column, int NumClasses) ResolveLabels(DataViewSchema schema)
    {
        string name = _options.LabelColumnName;
        var (col, keyCount) = LabelColumn.Check(schema, name);
        if (keyCount is ulong count)
        {
            if (count < 2 || count > UNetConfig.MaxClasses)
                throw new ArgumentOutOfRangeException(nameof(schema), $"Label column '{name}' is a key type with {count} values; expected 2..{UNetConfig.MaxClasses} classes.");
            if (_options.NumClasses is int n && n != (int)count)
                throw new ArgumentOutOfRangeException(nameof(schema),
                    $"NoisyClassifierTrainer.Options.NumClasses is {n} but label column '{name}' is a key type with {count} values; leave NumClasses unset or make them agree.");
            return (col, (int)count);
        }
        int classes = _options.NumClasses ?? throw new ArgumentException(
            $"Label column '{name}' holds numbers ({col.Type}); set NoisyClassifierTrainer.Options.NumClasses to the number of classes " +
            "(labels 0..NumClasses - 1), or map the labels to a key type with mlContext.Transforms.Conversion.MapValueToKey.", nameof(schema));
        return (col, classes);
    }

    /// <summary>Trains on the images and labels of <paramref name="input"/> and returns the classifier.</summary>
    public NoisyClassifierModel Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var o = _options;
        var model = o.DiffusionModel!;
        var imageCol = TrainingImageInput.Check(input.Schema, o.ImageColumnName, model.ImageSize, model.Channels)
            .RejectColor(o.ConvertToGrayscale, "NoisyClassifierTrainer.Options.ConvertToGrayscale");
        var (labelCol, numClasses) = ResolveLabels(input.Schema);
        var settings = TrainingRunSettings.From(o);
        settings.RequireRows(input.GetRowCount());
        var device = DeviceSelection.Select(_host);
        var netConfig = o.ToNetworkConfig(model, numClasses);
        long seed = o.Seed ?? _host.Rand.Next();
        using var ch = _host.Start("Noisy classifier training");
        var network = TrainerBase.CreateSeeded(seed, () => new NoisyClassifierNetwork(netConfig));
        try
        {
            network.to(device);
            var schedule = new DiffusionSchedule(model.Config.Schedule, model.Timesteps);
            using var loop = new NoisyClassifierTrainingLoop(network, schedule, o.LearningRate, o.WeightDecay, seed, device);
            // The checkpoint identity: what the weights, the AdamW state and the data order depend on.
            string identity = JsonSerializer.Serialize(new
            {
                Trainer = nameof(NoisyClassifierTrainer), Network = netConfig, model.Config.Schedule, model.Timesteps, o.LearningRate,
                o.WeightDecay, o.BatchSize, o.ShuffleBufferSize,
            }, DiffusionModelConfig.Json);
            new Run(settings, loop, ch, o, schedule, device).Train(input, imageCol, labelCol, numClasses,
                model.Channels * model.ImageSize * model.ImageSize, identity, seed);
            var config = new NoisyClassifierModelConfig
            {
                Network = netConfig, Schedule = model.Config.Schedule, Timesteps = model.Timesteps, ImageColumnName = o.ImageColumnName,
                LabelColumnName = o.LabelColumnName, PredictedLabelColumnName = o.PredictedLabelColumnName, ScoreColumnName = o.ScoreColumnName,
                TrainedSteps = loop.Step,
            };
            return new NoisyClassifierModel(_host, config, network, device);
        }
        catch
        {
            network.Dispose();
            throw;
        }
    }

    /// <summary>The classifier's step on a batch; every training image needs a class.</summary>
    private sealed class Run(TrainingRunSettings settings, NoisyClassifierTrainingLoop loop, IChannel ch, Options o, DiffusionSchedule schedule,
        Device device) : TrainerBase<NoisyClassifierTrainingLoop>(settings, loop, ch)
    {
        protected override string Description
        {
            get
            {
                var c = Loop.Model.Config;
                return $"Training a {Loop.Model.ParameterCount:N0}-parameter noisy classifier on '{o.ImageColumnName}' / '{o.LabelColumnName}' " +
                       $"({c.ImageSize}x{c.ImageSize}x{c.InChannels}, {c.NumClasses} classes, {schedule.Kind} schedule, T = {schedule.Timesteps}), " +
                       $"{o.Epochs} epoch(s) of batch {o.BatchSize}, on {device.type}.";
            }
        }

        protected override string LossName => "cross-entropy";

        protected override string StepDetails(double meanLoss) => $"noisy-batch accuracy {Loop.LastAccuracy:P0}";

        protected override void CheckRow(long label, long index)
        {
            int classes = Loop.Model.Config.NumClasses;
            if (label == classes)
                throw new ArgumentOutOfRangeException("input",
                    $"Label column '{o.LabelColumnName}' has a missing key (0) in row {index}; every training image needs a class (keys 1..{classes}).");
        }

        protected override float TrainBatch(TrainingBatch batch)
        {
            var c = Loop.Model.Config;
            using var x = batch.Images(c.InChannels, c.ImageSize);
            using var y = batch.LabelTensor()!;
            return Loop.TrainStep(x, y);
        }
    }
}
