using Microsoft.ML.Diffusion.Training;

namespace Microsoft.ML.Diffusion;

// DiffusionTrainer.Options: everything a training run can set.
public sealed partial class DiffusionTrainer
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
        /// <summary>
        /// With the <see cref="Diffusion.LearningRateSchedule.Constant"/> schedule: the run's last optimizer steps, over which the
        /// learning rate falls linearly to zero (a cool-down, as in warmup-stable-decay training; 0, the default: none). Like
        /// the total step count it is not part of the checkpoint identity: a constant-rate run resumed with a cool-down follows
        /// exactly the curve it would have had from the start, as long as the checkpoint lies before the cool-down begins.
        /// Needs a row count the data view knows, or MaxSteps.
        /// </summary>
        public int LearningRateDecaySteps { get; set; }
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
}
