using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Training;
using Microsoft.ML.Runtime;
using Microsoft.ML.Transforms.Image;
using TorchSharp;
using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Columns;
using Microsoft.ML.Diffusion.Transforms;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Trains a denoising diffusion model (DDPM, Ho et al. 2020) on an image column and returns a
/// <see cref="DiffusionModel"/> that generates images. Reached as <c>mlContext.Generative.Diffusion(...)</c>.
/// </summary>
/// <remarks>
/// Images are streamed from the input's cursor through a shuffle buffer, never copied whole into memory.
/// Progress goes to the MLContext log and to <see cref="Options.Progress"/>; <see cref="Options.CancellationToken"/>
/// stops training between two steps. With <see cref="Options.CheckpointDirectory"/> set, checkpoints are written
/// atomically and a later Fit with the same options resumes from the last one.
/// </remarks>
public sealed partial class DiffusionTrainer : IEstimator<DiffusionModel>
{
    private readonly IHost _host;
    private readonly Options _options;

    /// <summary>Creates the trainer; prefer <c>mlContext.Generative.Diffusion(...)</c>.</summary>
    public DiffusionTrainer(IHostEnvironment env, Options options)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(options);
        _host = env.Register(nameof(DiffusionTrainer));
        _options = options;
        Validate(options);
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        TrainingImageInput.Check(inputSchema, _options.ImageColumnName, _options.ImageSize, _options.Channels);
        if (_options.LabelColumnName is string label) LabelColumn.Check(inputSchema, label);
        var columns = inputSchema.ToDictionary(c => c.Name);
        columns[_options.OutputColumnName] = new SchemaShape.Column(_options.OutputColumnName, SchemaShape.Column.VectorKind.Scalar,
            new ImageDataViewType(_options.ImageSize, _options.ImageSize), false);
        return new SchemaShape(columns.Values);
    }

    /// <summary>Trains on the images of <paramref name="input"/> and returns the model (its EMA weights).</summary>
    public DiffusionModel Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var o = _options;
        var imageCol = TrainingImageInput.Check(input.Schema, o.ImageColumnName, o.ImageSize, o.Channels)
            .RejectColor(o.ConvertToGrayscale, "DiffusionTrainer.Options.ConvertToGrayscale");
        var (labelCol, numClasses) = ResolveLabels(input.Schema);
        var device = DeviceSelection.Select(_host);
        var netConfig = o.ToNetworkConfig(numClasses);
        var schedule = new DiffusionSchedule(o.Schedule, o.Timesteps, o.RescaleBetasZeroSnr);
        long seed = o.Seed ?? _host.Rand.Next();

        using var ch = _host.Start("Diffusion training");
        if (o.Precision == Precision.Bf16Mixed && device.type == DeviceType.CPU && TorchRuntime.AppliedOneDnnIsaLimit is string isa)
            ch.Warning($"Precision.Bf16Mixed on the CPU while oneDNN is limited to {isa} (see TorchRuntime): bfloat16 convolutions then run on " +
                       "slow reference kernels. Unset MLNET_DIFFUSION_CPU_ISA (the default is the full instruction set) to use the AVX-512 BF16 kernels.");
        var (model, ema) = TrainerBase.CreateSeeded(seed, () => (new UNet(netConfig), new UNet(netConfig)));
        model.to(device);
        ema.to(device);
        ema.eval();

        var run = TrainingRunSettings.From(o);
        long? plannedSteps = run.PlannedSteps(input.GetRowCount());
        if (o.LearningRateSchedule == LearningRateSchedule.Cosine && plannedSteps is null)
            throw new InvalidOperationException(
                $"DiffusionTrainer.Options.LearningRateSchedule is Cosine, which decays to zero at the run's last step, but the input data view " +
                $"does not know its row count; set MaxSteps, or use LearningRateSchedule.Constant.");
        if (o.LearningRateDecaySteps > 0 && plannedSteps is null)
            throw new InvalidOperationException(
                $"DiffusionTrainer.Options.LearningRateDecaySteps is {o.LearningRateDecaySteps}, a cool-down over the run's last steps, but the input " +
                $"data view does not know its row count; set MaxSteps, or set LearningRateDecaySteps = 0.");
        var settings = new TrainingSettings
        {
            LearningRate = o.LearningRate, WeightDecay = o.WeightDecay, GradientClipNorm = o.GradientClipNorm,
            WarmupSteps = o.LearningRateWarmupSteps, LearningRateSchedule = o.LearningRateSchedule, TotalSteps = plannedSteps,
            DecaySteps = o.LearningRateDecaySteps,
            EmaDecay = o.EmaDecay, Seed = seed, Prediction = o.Prediction, LossWeighting = o.LossWeighting,
            LearnedVariance = o.Variance == VarianceType.Learned, SelfConditioning = o.SelfConditioning,
            LowResolutionFactor = o.Conditioning?.Factor ?? 0,
            NumClasses = numClasses, ConditionDropProbability = labelCol is null ? 0 : o.ConditionDropProbability,
            Precision = o.Precision, OffsetNoise = o.OffsetNoise, Objective = o.Objective,
        };
        LatentSpace? latent = null;
        if (o.Autoencoder is { } ae)
        {
            latent = new LatentSpace
            {
                DownsamplingFactor = ae.DownsamplingFactor, LatentChannels = ae.LatentChannels,
                ScaleFactor = LatentScale.Compute(ae, input, imageCol, o.BatchSize),
            };
            ch.Info($"Latent diffusion on the {ae.LatentChannels}x{ae.LatentSize}x{ae.LatentSize} latents of the autoencoder, scale factor {latent.ScaleFactor:G6}.");
        }
        string identity = CheckpointIdentity(o, netConfig, labelCol is null ? null : numClasses, latent);

        try
        {
            using var loop = new DiffusionTrainingLoop(model, ema, schedule, settings, device);
            var trainer = new Run(this, run, loop, ch, labelCol?.Name, latent, device);
            trainer.Train(input, imageCol, labelCol, netConfig.NumClasses, o.Channels * o.ImageSize * o.ImageSize, identity, seed);
            return new DiffusionModel(_host, trainer.ModelConfig(loop.Step), ema, device, autoencoder: o.Autoencoder);
        }
        catch
        {
            ema.Dispose();
            throw;
        }
        finally
        {
            model.Dispose();
        }
    }

    private const int MaxClasses = UNetConfig.MaxClasses;

    /// <summary>The label column and the number of classes (0 and null without class conditioning).</summary>
    private (DataViewSchema.Column? Column, int NumClasses) ResolveLabels(DataViewSchema schema)
    {
        var o = _options;
        if (o.LabelColumnName is not string name) return (null, 0);
        var (col, keyCount) = LabelColumn.Check(schema, name);
        if (keyCount is ulong count)
        {
            if (count == 0 || count > MaxClasses)
                throw new ArgumentOutOfRangeException(nameof(schema), $"Label column '{name}' is a key type with {count} values; expected 1..{MaxClasses} classes.");
            if (o.NumClasses is int n && n != (int)count)
                throw new ArgumentOutOfRangeException(nameof(schema),
                    $"DiffusionTrainer.Options.NumClasses is {n} but label column '{name}' is a key type with {count} values; leave NumClasses unset or make them agree.");
            return (col, (int)count);
        }
        int classes = o.NumClasses ?? throw new ArgumentException(
            $"Label column '{name}' holds numbers ({col.Type}); set DiffusionTrainer.Options.NumClasses to the number of classes " +
            "(labels 0..NumClasses - 1), or map the labels to a key type with mlContext.Transforms.Conversion.MapValueToKey.", nameof(schema));
        return (col, classes);
    }

    /// <summary>The diffusion trainer's step on a batch (through the autoencoder for latent diffusion), and its snapshots.</summary>
    private sealed class Run : TrainerBase<DiffusionTrainingLoop>
    {
        private readonly DiffusionTrainer _trainer;
        private readonly Options _o;
        private readonly string? _labelColumnName;
        private readonly LatentSpace? _latent;
        private readonly Device _device;

        public Run(DiffusionTrainer trainer, TrainingRunSettings settings, DiffusionTrainingLoop loop, IChannel ch, string? labelColumnName,
            LatentSpace? latent, Device device)
            : base(settings, loop, ch)
        {
            _trainer = trainer;
            _o = trainer._options;
            _labelColumnName = labelColumnName;
            _latent = latent;
            _device = device;
        }

        protected override string Description =>
            $"Training a {Loop.Model.ParameterCount:N0}-parameter U-Net on '{_o.ImageColumnName}' ({_o.ImageSize}x{_o.ImageSize}x{_o.Channels}), " +
            (_o.Objective == DiffusionObjective.FlowMatching ? $"flow matching (time t x {_o.Timesteps})" : $"T = {_o.Timesteps} ({_o.Schedule})") +
            $", {_o.Epochs} epoch(s) of batch {_o.BatchSize}, on {_device.type}.";

        protected override float TrainBatch(TrainingBatch batch)
        {
            using var pixels = batch.Images(_o.Channels, _o.ImageSize);
            using var x0 = _latent is null ? pixels.alias() : Sampling.LatentCodec.ToLatent(_o.Autoencoder!, pixels, _latent.ScaleFactor);
            using var y = batch.LabelTensor();
            return Loop.TrainStep(x0, y);
        }

        protected override void EpochCompleted(int epoch, float meanLoss, double imagesPerSecond)
        {
            if (_o.EpochCompleted is not { } epochCompleted) return;
            var ema = (UNet)Loop.Ema.Shadow;
            var snapshot = new TrainingSnapshot(epoch, _o.Epochs, Loop.Step, meanLoss, imagesPerSecond, _o.CancellationToken,
                () => new DiffusionModel(_trainer._host, ModelConfig(Loop.Step), TrainerBase.CopyOf(ema, () => new UNet(ema.Config)), _device,
                    autoencoder: _o.Autoencoder));
            try
            {
                epochCompleted(snapshot);
            }
            finally
            {
                snapshot.Expire();
            }
        }

        /// <summary>The saved model's settings after trainedSteps steps (the final model's, and each TrainingSnapshot's).</summary>
        public DiffusionModelConfig ModelConfig(long trainedSteps) => new()
        {
            Network = Loop.Model.Config, Schedule = _o.Schedule, Timesteps = _o.Timesteps, ImageSize = _o.ImageSize, Channels = _o.Channels,
            OutputColumnName = _o.OutputColumnName, SeedColumnName = _o.SeedColumnName,
            DefaultSampler = (_o.Sampler ?? new SamplerOptions()).ToSettings(), TrainedSteps = trainedSteps,
            Prediction = _o.Prediction, Variance = _o.Variance, SelfConditioning = _o.SelfConditioning, Conditioning = _o.Conditioning,
            LabelColumnName = _labelColumnName, ConditionDropProbability = _labelColumnName is null ? 0 : _o.ConditionDropProbability,
            Latent = _latent, RescaleBetasZeroSnr = _o.RescaleBetasZeroSnr, Objective = _o.Objective,
        };
    }

    /// <summary>Held while libtorch's global generator is seeded (see <see cref="TrainerBase.TorchGlobalSeed"/>).</summary>
    internal static object TorchGlobalSeed => TrainerBase.TorchGlobalSeed;
}
