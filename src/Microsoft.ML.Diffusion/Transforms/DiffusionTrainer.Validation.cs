using System.Text.Json;
using Microsoft.ML.Diffusion.Sampling;

namespace Microsoft.ML.Diffusion;

// DiffusionTrainer: the checks of its Options and the checkpoint identity of a run.
public sealed partial class DiffusionTrainer
{
    private static void Validate(Options o)
    {
        static void Positive(int value, string name)
        {
            if (value < 1) throw new ArgumentOutOfRangeException(name, value, $"DiffusionTrainer.Options.{name} must be >= 1.");
        }
        if (string.IsNullOrWhiteSpace(o.ImageColumnName)) throw new ArgumentException("ImageColumnName must be set.", nameof(o.ImageColumnName));
        if (string.IsNullOrWhiteSpace(o.OutputColumnName)) throw new ArgumentException("OutputColumnName must be set.", nameof(o.OutputColumnName));
        if (o.Channels != 1 && o.Channels != 3)
            throw new ArgumentOutOfRangeException(nameof(o.Channels), o.Channels, "DiffusionTrainer.Options.Channels must be 1 (grayscale) or 3 (RGB).");
        Positive(o.ImageSize, nameof(o.ImageSize));
        Positive(o.Timesteps, nameof(o.Timesteps));
        if (o.Timesteps > DiffusionModelConfig.MaxTimesteps)
            throw new ArgumentOutOfRangeException(nameof(o.Timesteps), o.Timesteps, $"DiffusionTrainer.Options.Timesteps must be at most {DiffusionModelConfig.MaxTimesteps}.");
        Positive(o.Epochs, nameof(o.Epochs));
        Positive(o.BatchSize, nameof(o.BatchSize));
        Positive(o.ShuffleBufferSize, nameof(o.ShuffleBufferSize));
        Positive(o.CheckpointInterval, nameof(o.CheckpointInterval));
        if (!Enum.IsDefined(o.Prediction))
            throw new ArgumentOutOfRangeException(nameof(o.Prediction), o.Prediction,
                $"Unknown DiffusionTrainer.Options.Prediction; expected one of {string.Join(", ", Enum.GetNames<PredictionType>())}.");
        if (!Enum.IsDefined(o.LossWeighting))
            throw new ArgumentOutOfRangeException(nameof(o.LossWeighting), o.LossWeighting,
                $"Unknown DiffusionTrainer.Options.LossWeighting; expected one of {string.Join(", ", Enum.GetNames<LossWeighting>())}.");
        if (!Enum.IsDefined(o.Variance))
            throw new ArgumentOutOfRangeException(nameof(o.Variance), o.Variance,
                $"Unknown DiffusionTrainer.Options.Variance; expected one of {string.Join(", ", Enum.GetNames<VarianceType>())}.");
        if (!Enum.IsDefined(o.Precision))
            throw new ArgumentOutOfRangeException(nameof(o.Precision), o.Precision,
                $"Unknown DiffusionTrainer.Options.Precision; expected one of {string.Join(", ", Enum.GetNames<Precision>())}.");
        Positive(o.LogInterval, nameof(o.LogInterval));
        if (!(o.LearningRate > 0 && float.IsFinite(o.LearningRate)))
            throw new ArgumentOutOfRangeException(nameof(o.LearningRate), o.LearningRate, "DiffusionTrainer.Options.LearningRate must be a positive number.");
        if (o.LearningRateWarmupSteps < 0)
            throw new ArgumentOutOfRangeException(nameof(o.LearningRateWarmupSteps), o.LearningRateWarmupSteps,
                "DiffusionTrainer.Options.LearningRateWarmupSteps must be 0 (no warm-up) or more.");
        if (!Enum.IsDefined(o.LearningRateSchedule))
            throw new ArgumentOutOfRangeException(nameof(o.LearningRateSchedule), o.LearningRateSchedule,
                "DiffusionTrainer.Options.LearningRateSchedule must be Constant or Cosine.");
        if (o.LearningRateDecaySteps < 0)
            throw new ArgumentOutOfRangeException(nameof(o.LearningRateDecaySteps), o.LearningRateDecaySteps,
                "DiffusionTrainer.Options.LearningRateDecaySteps must be 0 (no cool-down) or more.");
        if (o.LearningRateDecaySteps > 0 && o.LearningRateSchedule != LearningRateSchedule.Constant)
            throw new ArgumentException(
                $"DiffusionTrainer.Options.LearningRateDecaySteps is {o.LearningRateDecaySteps}, but LearningRateSchedule is {o.LearningRateSchedule}, " +
                "which already decays to zero; a cool-down goes with LearningRateSchedule.Constant.", nameof(o.LearningRateDecaySteps));
        if (!(o.EmaDecay >= 0 && o.EmaDecay < 1))
            throw new ArgumentOutOfRangeException(nameof(o.EmaDecay), o.EmaDecay, "DiffusionTrainer.Options.EmaDecay must be in [0, 1).");
        if (o.MaxSteps is long m && m < 1)
            throw new ArgumentOutOfRangeException(nameof(o.MaxSteps), m, "DiffusionTrainer.Options.MaxSteps must be >= 1 when set.");
        if (!Enum.IsDefined(o.Schedule))
            throw new ArgumentOutOfRangeException(nameof(o.Schedule), o.Schedule, $"Unknown schedule; expected one of {string.Join(", ", Enum.GetNames<NoiseSchedule>())}.");
        if (!Enum.IsDefined(o.Objective))
            throw new ArgumentOutOfRangeException(nameof(o.Objective), o.Objective,
                $"Unknown DiffusionTrainer.Options.Objective; expected one of {string.Join(", ", Enum.GetNames<DiffusionObjective>())}.");
        if (o.Objective == DiffusionObjective.FlowMatching)
            ValidateFlowMatching(o);
        if (o.RescaleBetasZeroSnr && o.Prediction == PredictionType.Epsilon)
            throw new ArgumentException(
                "DiffusionTrainer.Options.RescaleBetasZeroSnr is true with Prediction = Epsilon: the rescaled schedule has alpha_bar_T = 0, where an " +
                "epsilon prediction does not determine x_0 (x_0 = (x_T - sqrt(1 - alpha_bar_T) eps) / sqrt(alpha_bar_T) divides by zero). Set " +
                "Prediction = PredictionType.VPrediction (Lin et al. 2024, section 3.2), or leave RescaleBetasZeroSnr false.", nameof(o.RescaleBetasZeroSnr));
        if (o.RescaleBetasZeroSnr && o.Timesteps < 2)
            throw new ArgumentOutOfRangeException(nameof(o.Timesteps), o.Timesteps,
                "DiffusionTrainer.Options.RescaleBetasZeroSnr needs Timesteps >= 2 (it keeps the first alpha_bar and zeroes the last).");
        if (!(o.OffsetNoise >= 0 && float.IsFinite(o.OffsetNoise)))
            throw new ArgumentOutOfRangeException(nameof(o.OffsetNoise), o.OffsetNoise,
                "DiffusionTrainer.Options.OffsetNoise must be a finite number >= 0 (0: plain Gaussian noise; typical values 0.05-0.1).");
        o.Conditioning?.Validate(o.ImageSize);
        if (o.Autoencoder is { } ae)
        {
            if (ae.ImageSize != o.ImageSize || ae.Channels != o.Channels)
                throw new ArgumentException(
                    $"DiffusionTrainer.Options.Autoencoder encodes {ae.Channels}-channel {ae.ImageSize}x{ae.ImageSize} images; the options ask for " +
                    $"ImageSize = {o.ImageSize}, Channels = {o.Channels}. Train the autoencoder on images of the same size and channels.", nameof(o.Autoencoder));
            if (o.SelfConditioning)
                throw new ArgumentException("DiffusionTrainer.Options.SelfConditioning is not supported with an Autoencoder (latent diffusion).", nameof(o.SelfConditioning));
            if (o.Conditioning is not null)
                throw new ArgumentException($"DiffusionTrainer.Options.Conditioning ({o.Conditioning}) is not supported with an Autoencoder (latent diffusion).", nameof(o.Conditioning));
        }
        if (o.LabelColumnName is not null && string.IsNullOrWhiteSpace(o.LabelColumnName))
            throw new ArgumentException("DiffusionTrainer.Options.LabelColumnName is blank; set a column name or leave it null (no class conditioning).", nameof(o.LabelColumnName));
        if (o.NumClasses is int nc && (nc < 1 || nc > MaxClasses))
            throw new ArgumentOutOfRangeException(nameof(o.NumClasses), nc, $"DiffusionTrainer.Options.NumClasses must be between 1 and {MaxClasses} when set.");
        if (o.NumClasses is not null && o.LabelColumnName is null)
            throw new ArgumentException("DiffusionTrainer.Options.NumClasses is set but LabelColumnName is not; set the label column to train a class-conditional model.", nameof(o.NumClasses));
        if (!(o.ConditionDropProbability >= 0 && o.ConditionDropProbability <= 1))
            throw new ArgumentOutOfRangeException(nameof(o.ConditionDropProbability), o.ConditionDropProbability,
                "DiffusionTrainer.Options.ConditionDropProbability must be in [0, 1].");
        var network = o.ToNetworkConfig(o.LabelColumnName is null ? 0 : o.NumClasses ?? 1);
        if (o.AttentionResolutions is { } attention && network.ChannelMultipliers.Length > 0)
        {
            var reached = network.Resolutions();
            foreach (int r in attention)
                if (Array.IndexOf(reached, r) < 0)
                    throw new ArgumentOutOfRangeException(nameof(o.AttentionResolutions), $"[{string.Join(", ", attention)}]",
                        $"DiffusionTrainer.Options.AttentionResolutions contains {r}, a side the network never reaches: with " +
                        $"{(o.Autoencoder is null ? "ImageSize" : "the latent grid")} {network.ImageSize} and ChannelMultipliers " +
                        $"[{string.Join(", ", network.ChannelMultipliers)}] its feature maps are {string.Join(", ", reached)} pixels. " +
                        $"Use those sides, or leave AttentionResolutions null to get " +
                        $"[{string.Join(", ", UNetConfig.DefaultAttentionResolutions(network.ImageSize, network.ChannelMultipliers))}] (the lowest resolution).");
        }
        network.Validate();
        (o.Sampler ?? new SamplerOptions()).Validate(o.Timesteps);
    }

    /// <summary>The options that describe the DDPM objective stay at their defaults with flow matching, and the sampler is a flow sampler.</summary>
    private static void ValidateFlowMatching(Options o)
    {
        static ArgumentException Unsupported(string option, object value, string why) => new(
            $"DiffusionTrainer.Options.{option} is {value}, but Objective is FlowMatching, {why}. Leave {option} at its default with flow matching.", option);
        if (o.Prediction != PredictionType.Epsilon)
            throw Unsupported(nameof(o.Prediction), o.Prediction, "whose network always predicts the velocity v = eps - x_0");
        if (o.Variance != VarianceType.FixedSmall)
            throw Unsupported(nameof(o.Variance), o.Variance, "which has no reverse-step variance to learn");
        if (o.LossWeighting != LossWeighting.None)
            throw Unsupported(nameof(o.LossWeighting), o.LossWeighting, "whose loss is the plain MSE to the velocity (Min-SNR weights are defined on the DDPM schedule)");
        if (o.Schedule != NoiseSchedule.Linear)
            throw Unsupported(nameof(o.Schedule), o.Schedule, "which has no beta schedule (its path is x_t = (1 - t) x_0 + t eps)");
        if (o.RescaleBetasZeroSnr)
            throw Unsupported(nameof(o.RescaleBetasZeroSnr), true, "whose path already ends in pure noise at t = 1");
        if (o.SelfConditioning)
            throw Unsupported(nameof(o.SelfConditioning), true, "which does not support self-conditioning");
        var row = SamplerRegistry.Get((o.Sampler ?? new SamplerOptions()).Sampler, nameof(o.Sampler));
        if (row.Objective != DiffusionObjective.FlowMatching)
            throw new ArgumentException(
                $"DiffusionTrainer.Options.Sampler.Sampler is {row.Kind} ({row.DisplayName}), a sampler for Ddpm models, but Objective is FlowMatching; " +
                $"set Sampler = new SamplerOptions {{ Sampler = SamplerKind.FlowMatchEuler }} (or one of: {SamplerRegistry.NamesFor(DiffusionObjective.FlowMatching)}).",
                nameof(o.Sampler));
    }

    /// <summary>
    /// The run's identity in its checkpoints: a checkpoint resumes only under the same one. Options added over time enter it
    /// only when not at their defaults, each as one more layer { Run = identity so far, option }, so that checkpoints written
    /// before an option existed keep resuming. The total step count is left out, so raising Epochs continues a run (a cosine
    /// run stretches its decay), and so is the cool-down (LearningRateDecaySteps), so a constant-rate run can end in one.
    /// </summary>
    private static string CheckpointIdentity(Options o, UNetConfig netConfig, int? numClasses, LatentSpace? latent)
    {
        static string Json<T>(T value) => JsonSerializer.Serialize(value, DiffusionModelConfig.Json);
        var identityFields = new
        {
            Network = netConfig, o.Schedule, o.Timesteps, o.BatchSize, o.LearningRate, o.WeightDecay, o.GradientClipNorm,
            o.EmaDecay, o.ShuffleBufferSize,
        };
        // In the order the options were added: the training target and weighting, the variance, self-conditioning, the
        // conditioning, class conditioning, the precision, the learning-rate curve, the latent space, zero terminal SNR, offset noise, the objective.
        string identity = o.Prediction == PredictionType.Epsilon && o.LossWeighting == LossWeighting.None
            ? Json(identityFields)
            : Json(new { Run = identityFields, o.Prediction, o.LossWeighting });
        if (o.Variance != VarianceType.FixedSmall)
            identity = Json(new { Run = identity, o.Variance });
        if (o.SelfConditioning)
            identity = Json(new { Run = identity, o.SelfConditioning });
        if (o.Conditioning is not null)
            identity = Json(new { Run = identity, o.Conditioning });
        if (numClasses is int classes)
            identity = Json(new { Run = identity, NumClasses = classes, o.ConditionDropProbability });
        if (o.Precision != Precision.Fp32)
            identity = Json(new { Run = identity, o.Precision });
        if (o.LearningRateWarmupSteps != 0 || o.LearningRateSchedule != LearningRateSchedule.Constant)
            identity = Json(new { Run = identity, o.LearningRateWarmupSteps, o.LearningRateSchedule });
        if (latent is not null)
            identity = Json(new { Run = identity, Latent = latent, Autoencoder = o.Autoencoder!.Config });
        if (o.RescaleBetasZeroSnr)
            identity = Json(new { Run = identity, o.RescaleBetasZeroSnr });
        if (o.OffsetNoise != 0)
            identity = Json(new { Run = identity, o.OffsetNoise });
        if (o.Objective != DiffusionObjective.Ddpm)
            identity = Json(new { Run = identity, o.Objective });
        return identity;
    }
}
