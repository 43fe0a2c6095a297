using System.Text.Json;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Diffusion.Sampling;
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
public sealed class DiffusionTrainer : IEstimator<DiffusionModel>
{
    /// <summary>Options of <see cref="DiffusionTrainer"/>.</summary>
    public sealed class Options : ITrainingRunOptions
    {
        /// <summary>The training images: an MLImage column, or a vector of Single pixel values 0..255 in ExtractPixels' default
        /// layout (planar R, G, B: <c>Vector&lt;Single, 3, ImageSize, ImageSize&gt;</c>; one plane is accepted when Channels = 1).
        /// NaN, infinite or out-of-range pixel values stop training with an error naming the row.</summary>
        public string ImageColumnName { get; set; } = DiffusionDefaults.ImageColumnName;
        /// <summary>The column the trained model writes generated images to.</summary>
        public string OutputColumnName { get; set; } = DiffusionDefaults.OutputColumnName;
        /// <summary>The column of request seeds (UInt32) the trained model reads, when present.</summary>
        public string SeedColumnName { get; set; } = DiffusionDefaults.SeedColumnName;
        /// <summary>Image side in pixels; input images must have this size (use ResizeImages).</summary>
        public int ImageSize { get; set; } = DiffusionDefaults.ImageSize;
        /// <summary>1 trains on grayscale, 3 on RGB. Grayscale images are accepted for 3 channels (each channel repeats them); color
        /// images for 1 channel only with <see cref="ConvertToGrayscale"/>.</summary>
        public int Channels { get; set; } = DiffusionDefaults.Channels;
        /// <summary>For a grayscale model (Channels = 1): false (default) makes a color image (one whose R, G and B differ
        /// somewhere, or three ExtractPixels planes that differ) an error naming the column and row; true converts color images to
        /// their ITU-R BT.601 luma. Grayscale images (equal channels, as ConvertToGrayscale writes them) are accepted either way.</summary>
        public bool ConvertToGrayscale { get; set; }
        /// <summary>U-Net width at the first resolution.</summary>
        public int BaseChannels { get; set; } = DiffusionDefaults.BaseChannels;
        /// <summary>Width multiplier of each resolution level; the image is halved between levels.</summary>
        public int[] ChannelMultipliers { get; set; } = DiffusionDefaults.ChannelMultipliers;
        /// <summary>Feature-map sides (pixels) that get self-attention; each must be one the network reaches (ImageSize,
        /// ImageSize / 2, ... one per entry of <see cref="ChannelMultipliers"/>). Null (default) derives them from the image size
        /// (<see cref="UNetConfig.DefaultAttentionResolutions"/>: the lowest resolution, e.g. 7 for 28 pixels, 8 for 32, 4 for 16
        /// with multipliers 1, 2, 2); an empty array turns attention off. The value used is saved with the model.</summary>
        public int[]? AttentionResolutions { get; set; }
        /// <summary>Residual blocks per level on the way down (one more on the way up).</summary>
        public int NumResBlocks { get; set; } = DiffusionDefaults.NumResBlocks;
        /// <summary>GroupNorm groups; every level's width must be divisible by it.</summary>
        public int GroupNormGroups { get; set; } = DiffusionDefaults.GroupNormGroups;
        /// <summary>Dropout in the residual blocks.</summary>
        public float Dropout { get; set; }
        /// <summary>T, the number of diffusion timesteps.</summary>
        public int Timesteps { get; set; } = DiffusionDefaults.Timesteps;
        /// <summary>The beta schedule.</summary>
        public NoiseSchedule Schedule { get; set; } = NoiseSchedule.Linear;
        /// <summary>Passes over the data. Raising it and calling Fit again with the same CheckpointDirectory continues training.</summary>
        public int Epochs { get; set; } = DiffusionDefaults.Epochs;
        /// <summary>Images per optimizer step.</summary>
        public int BatchSize { get; set; } = DiffusionDefaults.BatchSize;
        /// <summary>Stop after this many optimizer steps in all (null: run all epochs).</summary>
        public long? MaxSteps { get; set; }
        /// <summary>AdamW learning rate.</summary>
        public float LearningRate { get; set; } = DiffusionDefaults.LearningRate;
        /// <summary>Optimizer steps over which the learning rate rises linearly from LearningRate / steps to LearningRate
        /// (0, the default: no warm-up). Counted from the run's first step, resumed steps included.</summary>
        public int LearningRateWarmupSteps { get; set; }
        /// <summary>The learning rate after the warm-up: <see cref="Diffusion.LearningRateSchedule.Constant"/> (default) or
        /// <see cref="Diffusion.LearningRateSchedule.Cosine"/>, a half-cosine decay to zero at the run's last step (which needs a
        /// row count the data view knows, or MaxSteps).</summary>
        public LearningRateSchedule LearningRateSchedule { get; set; } = LearningRateSchedule.Constant;
        /// <summary>AdamW decoupled weight decay.</summary>
        public float WeightDecay { get; set; } = DiffusionDefaults.WeightDecay;
        /// <summary>Global gradient-norm clip (0 disables).</summary>
        public float GradientClipNorm { get; set; } = DiffusionDefaults.GradientClipNorm;
        /// <summary>Decay of the weights' exponential moving average; the model samples with the averaged weights.</summary>
        public float EmaDecay { get; set; } = DiffusionDefaults.EmaDecay;
        /// <summary>Rows held by the shuffle buffer (1 keeps the input order).</summary>
        public int ShuffleBufferSize { get; set; } = DiffusionDefaults.ShuffleBufferSize;
        /// <summary>Seed of weights, noise and data order; null takes one from the MLContext's seed.</summary>
        public int? Seed { get; set; }
        /// <summary>When set: a checkpoint is written atomically every <see cref="CheckpointInterval"/> steps and at each epoch's end, and Fit resumes from it if present.</summary>
        public string? CheckpointDirectory { get; set; }
        /// <summary>Optimizer steps between checkpoints.</summary>
        public int CheckpointInterval { get; set; } = DiffusionDefaults.CheckpointInterval;
        /// <summary>Steps between two log lines on the MLContext log.</summary>
        public int LogInterval { get; set; } = 50;
        /// <summary>What the network learns to predict: the noise eps (default, DDPM), the clean image x_0, or
        /// v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans &amp; Ho 2022). Saved with the model; its samplers use it.</summary>
        public PredictionType Prediction { get; set; } = PredictionType.Epsilon;
        /// <summary>
        /// The training objective. <see cref="DiffusionObjective.Ddpm"/> (default): denoising diffusion on the beta schedule
        /// (<see cref="Schedule"/>, <see cref="Prediction"/>, <see cref="Variance"/>). <see cref="DiffusionObjective.FlowMatching"/>: flow
        /// matching on the rectified-flow path (Lipman et al. 2023; Liu et al. 2023; Stable Diffusion 3): x_t = (1 - t) x_0 + t eps with
        /// t ~ Uniform[0, 1) (uniform, as Lipman et al. and Liu et al.; SD3's logit-normal sampling is not offered), the network sees the
        /// time t * <see cref="Timesteps"/> as a float and learns the velocity v = eps - x_0 by mean squared error. A flow model samples
        /// with <see cref="SamplerKind.FlowMatchEuler"/> or <see cref="SamplerKind.FlowMatchHeun"/>: set <see cref="Sampler"/> to one of
        /// them. It leaves Schedule, Prediction, Variance and LossWeighting at their defaults (they describe the DDPM objective) and does not
        /// take SelfConditioning or RescaleBetasZeroSnr; class conditioning (with classifier-free guidance), OffsetNoise,
        /// super-resolution conditioning and latent diffusion work as with DDPM. RePaint inpainting and classifier guidance are not
        /// supported. Saved with the model.
        /// </summary>
        public DiffusionObjective Objective { get; set; } = DiffusionObjective.Ddpm;
        /// <summary>
        /// Rescales the betas to zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
        /// Algorithm 1; diffusers' <c>rescale_betas_zero_snr</c>): sqrt(alpha_bar) is shifted and scaled so that its last value is 0 and
        /// its first unchanged, so the last timestep is pure noise, as sampling starts. Without it the last timestep keeps a little
        /// signal (SNR(T) = 4e-5 for the linear schedule), which the network learns to use, and images drift to medium brightness.
        /// At alpha_bar_T = 0 an epsilon prediction does not determine x_0, so this needs <see cref="Prediction"/> =
        /// <see cref="PredictionType.VPrediction"/> (as Lin et al. use; <see cref="PredictionType.Sample"/> is accepted too), and at
        /// least 2 <see cref="Timesteps"/>. Sample with steps that start at the last timestep: <see cref="TimestepSpacing.Trailing"/>
        /// (section 3.3). Saved with the model; every sampler uses the rescaled schedule. Default false.
        /// </summary>
        public bool RescaleBetasZeroSnr { get; set; }
        /// <summary>
        /// Offset noise (Guttenberg 2023, "Diffusion with Offset Noise"; diffusers' training scripts' <c>noise_offset</c>): the training
        /// noise is eps = randn(x) + OffsetNoise * randn(B, C, 1, 1), a per-image, per-channel constant added to the Gaussian noise, so
        /// the network learns to change an image's mean brightness (very dark or bright images). Only training changes; typical values
        /// 0.05-0.1. Default 0 (plain Gaussian noise, the training of earlier releases bit for bit).
        /// </summary>
        public float OffsetNoise { get; set; }
        /// <summary>Per-timestep loss weighting: none (default) or Min-SNR-5 (Hang et al. 2023), which speeds up convergence.</summary>
        public LossWeighting LossWeighting { get; set; } = LossWeighting.None;
        /// <summary>The reverse-step variance: FixedSmall (default, beta_tilde), FixedLarge (beta), or Learned (Improved DDPM,
        /// Nichol &amp; Dhariwal 2021): the network then outputs 2 x Channels channels and is trained with the hybrid loss
        /// L_simple + 0.001 L_vlb (eq. 16). Saved with the model; DDPM sampling uses it.</summary>
        public VarianceType Variance { get; set; } = VarianceType.FixedSmall;
        /// <summary>Self-conditioning (Chen, Zhang &amp; Hinton 2022, "Analog Bits", section 3, algorithms 1 and 2): the network
        /// also sees its own previous estimate of x_0, concatenated to x_t (so it has 2 x Channels input channels). In training the
        /// estimate is, for half of the batches, the network's own x_0 prediction under stop-gradient, else zeros; in sampling it is
        /// the previous step's estimate. Saved with the model. Default false.</summary>
        public bool SelfConditioning { get; set; }
        /// <summary>Image conditioning; null (default) trains an unconditional model. <c>Conditioning.LowResolution(factor)</c>
        /// (factor 2 or 4) trains a super-resolution model in the style of SR3 (Saharia et al. 2021) and guided-diffusion's
        /// SuperResModel: the network also receives, as <see cref="Channels"/> extra input channels, the bicubic upsampling of
        /// each training image average-pooled by the factor (clamped to [-1, 1]). Such a model upscales images of
        /// ImageSize / factor pixels and cannot generate from noise alone. Saved with the model.</summary>
        public Conditioning? Conditioning { get; set; }
        /// <summary>Latent diffusion (Rombach et al. 2022): a trained <see cref="AutoencoderModel"/> of the same ImageSize and
        /// Channels. The U-Net is then trained on the autoencoder's latents (the posterior mean, not a sample), multiplied by a
        /// scale factor computed from the data (LDM's scale_by_std: 1 / standard deviation of the latents of the first
        /// BatchSize rows, in input order), on a grid of ImageSize / f with the autoencoder's latent channels
        /// (<see cref="AttentionResolutions"/> then refer to that grid); every sampler decodes at the end, so the model still
        /// produces ImageSize images. Latent models sample without clipping or thresholding x_0 (latents are not bounded).
        /// The autoencoder is saved in the diffusion model's zip. Not combined with <see cref="SelfConditioning"/> or
        /// <see cref="Conditioning"/>. Null (default): pixel space.</summary>
        public AutoencoderModel? Autoencoder { get; set; }
        /// <summary>
        /// Class conditioning: the column of class labels, key-typed (the number of classes is the key count; the missing key
        /// trains the null label) or integer-valued (classes 0..<see cref="NumClasses"/> - 1). The U-Net then adds a learned
        /// class embedding (NumClasses + 1 rows, the last one the null label) to its time embedding, and generation requests
        /// may carry labels (<c>mlContext.Generative.CreateRequests(count, seed, labels)</c>, <see cref="SamplerOptions.GuidanceScale"/>).
        /// Null (default): no class conditioning. Saved with the model.
        /// </summary>
        public string? LabelColumnName { get; set; }
        /// <summary>The number of classes of an integer label column (a key-typed column gives its own; when set it must agree).</summary>
        public int? NumClasses { get; set; }
        /// <summary>Probability with which a training label is replaced by the null label, so that the same network also learns
        /// the unconditional model that classifier-free guidance needs (Ho &amp; Salimans 2022, algorithm 1, p_uncond). Default 0.1;
        /// 0 trains no unconditional branch (guidance then has nothing to contrast with).</summary>
        public float ConditionDropProbability { get; set; } = DiffusionDefaults.ConditionDropProbability;
        /// <summary>The number format of training's forward and backward passes: <see cref="Precision.Fp32"/> (default) or
        /// <see cref="Precision.Bf16Mixed"/>, bfloat16 mixed precision (a bfloat16 working copy of the network computes the
        /// forward and backward passes; the weights, AdamW state, gradient clipping, EMA and loss stay float32, and so does the
        /// trained model). Not saved with the model: sampling precision is <see cref="SamplerOptions.Precision"/>.</summary>
        public Precision Precision { get; set; } = Precision.Fp32;
        /// <summary>The sampler the trained model's Transform uses (saved with the model); one of the samplers of <see cref="Objective"/>
        /// (DDIM by default, which fits the default DDPM objective; <see cref="SamplerKind.FlowMatchEuler"/> or
        /// <see cref="SamplerKind.FlowMatchHeun"/> with flow matching).</summary>
        public SamplerOptions Sampler { get; set; } = new();
        /// <summary>Receives a report after every optimizer step.</summary>
        public IProgress<TrainingProgress>? Progress { get; set; }
        /// <summary>
        /// Called at the end of every epoch that completes (after its checkpoint is written, when a
        /// <see cref="CheckpointDirectory"/> is set), on the training thread, with a <see cref="TrainingSnapshot"/>: the epoch,
        /// the step, the epoch's mean loss, and <see cref="TrainingSnapshot.CreateModel"/>, a model from the current EMA weights
        /// to sample from or save, as diffusers' training scripts validate every N epochs. Training waits for it to return. Not
        /// called for an epoch that <see cref="MaxSteps"/> or cancellation stops part-way; a resumed run calls it for the epochs
        /// it completes only. An exception it throws stops training and propagates out of Fit (the epoch's checkpoint is kept).
        /// </summary>
        public Action<TrainingSnapshot>? EpochCompleted { get; set; }
        /// <summary>Stops training between two steps (a checkpoint is written first when a directory is set).</summary>
        public CancellationToken CancellationToken { get; set; }

        /// <summary>Side of the grid the U-Net denoises: ImageSize, or ImageSize / f with an autoencoder.</summary>
        internal int SampleSize => Autoencoder is { } ae ? ImageSize / ae.DownsamplingFactor : ImageSize;

        /// <summary>Channels the U-Net denoises: Channels, or the autoencoder's latent channels.</summary>
        internal int SampleChannels => Autoencoder?.LatentChannels ?? Channels;

        /// <summary>The attention resolutions the network gets: <see cref="AttentionResolutions"/> when set, else the default for
        /// the denoised grid (<see cref="UNetConfig.DefaultAttentionResolutions"/>).</summary>
        public int[] ResolveAttentionResolutions() =>
            AttentionResolutions?.ToArray() ?? UNetConfig.DefaultAttentionResolutions(SampleSize, ChannelMultipliers ?? Array.Empty<int>());

        internal UNetConfig ToNetworkConfig(int numClasses = 0) => new()
        {
            NumClasses = numClasses,
            ImageSize = SampleSize,
            // concat(x_t, x0_hat) (Analog Bits, section 3), then the conditioning image (SR3: concat(x_t, upsample(low_res))).
            InChannels = (SelfConditioning ? 2 * SampleChannels : SampleChannels) + (Conditioning?.ExtraChannels(Channels) ?? 0),
            OutChannels = Variance == VarianceType.Learned ? 2 * SampleChannels : SampleChannels,   // prediction, then v (Improved DDPM eq. 15)
            BaseChannels = BaseChannels,
            ChannelMultipliers = ChannelMultipliers.ToArray(),
            NumResBlocks = NumResBlocks,
            AttentionResolutions = ResolveAttentionResolutions(),
            GroupNormGroups = GroupNormGroups,
            Dropout = Dropout,
        };
    }

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
        var settings = new TrainingSettings
        {
            LearningRate = o.LearningRate, WeightDecay = o.WeightDecay, GradientClipNorm = o.GradientClipNorm,
            WarmupSteps = o.LearningRateWarmupSteps, LearningRateSchedule = o.LearningRateSchedule, TotalSteps = plannedSteps,
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

    /// <summary>
    /// The run's identity in its checkpoints: a checkpoint resumes only under the same one. Options added over time enter it
    /// only when not at their defaults, each as one more layer { Run = identity so far, option }, so that checkpoints written
    /// before an option existed keep resuming. The total step count is left out, so raising Epochs continues a run (a cosine
    /// run stretches its decay).
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
            using var x0 = _latent is null ? pixels.alias() : LatentScale.ToLatent(_o.Autoencoder!, pixels, _latent.ScaleFactor);
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
            DefaultSampler = SamplerSettings.From(_o.Sampler ?? new SamplerOptions()), TrainedSteps = trainedSteps,
            Prediction = _o.Prediction, Variance = _o.Variance, SelfConditioning = _o.SelfConditioning, Conditioning = _o.Conditioning,
            LabelColumnName = _labelColumnName, ConditionDropProbability = _labelColumnName is null ? 0 : _o.ConditionDropProbability,
            Latent = _latent, RescaleBetasZeroSnr = _o.RescaleBetasZeroSnr, Objective = _o.Objective,
        };
    }

    /// <summary>Held while libtorch's global generator is seeded (see <see cref="TrainerBase.TorchGlobalSeed"/>).</summary>
    internal static object TorchGlobalSeed => TrainerBase.TorchGlobalSeed;
}
