namespace Microsoft.ML.Diffusion;

/// <summary>Default values of the diffusion components' options, in one place.</summary>
public static class DiffusionDefaults
{
    /// <summary>Input image column.</summary>
    public const string ImageColumnName = "Image";
    /// <summary>Output image column.</summary>
    public const string OutputColumnName = "GeneratedImage";
    /// <summary>Request seed column (UInt32).</summary>
    public const string SeedColumnName = "Seed";
    /// <summary>Class-label column of generation requests (<see cref="GenerativeCatalog.CreateRequests(int, uint, IReadOnlyList{int}, string, string)"/>).</summary>
    public const string LabelColumnName = "Label";
    /// <summary>Reconstructed-image column of an <see cref="AutoencoderModel"/> (<see cref="AutoencoderTrainer.DefaultOutputColumnName"/>).</summary>
    public const string ReconstructionColumnName = "Reconstruction";
    /// <summary>Predicted-label column of a <see cref="NoisyClassifierModel"/> (<see cref="NoisyClassifierTrainer.DefaultPredictedLabelColumnName"/>).</summary>
    public const string PredictedLabelColumnName = "PredictedLabel";
    /// <summary>Class-probability column of a <see cref="NoisyClassifierModel"/> (<see cref="NoisyClassifierTrainer.DefaultScoreColumnName"/>).</summary>
    public const string ScoreColumnName = "Score";
    /// <summary>Probability of training a class-conditional model's step on the null label (Ho &amp; Salimans 2022 use 0.1-0.2).</summary>
    public const float ConditionDropProbability = 0.1f;
    /// <summary>Image side in pixels (Fashion-MNIST).</summary>
    public const int ImageSize = 28;
    /// <summary>Grayscale.</summary>
    public const int Channels = 1;
    /// <summary>U-Net base width.</summary>
    public const int BaseChannels = 32;
    /// <summary>Residual blocks per resolution on the way down.</summary>
    public const int NumResBlocks = 2;
    /// <summary>GroupNorm groups.</summary>
    public const int GroupNormGroups = 8;
    /// <summary>T (DDPM uses 1000).</summary>
    public const int Timesteps = 1000;
    /// <summary>Passes over the data.</summary>
    public const int Epochs = 1;
    /// <summary>Images per optimizer step.</summary>
    public const int BatchSize = 64;
    /// <summary>AdamW learning rate (DDPM: 2e-4).</summary>
    public const float LearningRate = 2e-4f;
    /// <summary>AdamW weight decay.</summary>
    public const float WeightDecay = 1e-6f;
    /// <summary>Gradient clipping norm (DDPM: 1).</summary>
    public const float GradientClipNorm = 1f;
    /// <summary>EMA decay.</summary>
    public const float EmaDecay = 0.995f;
    /// <summary>Optimizer steps between checkpoints.</summary>
    public const int CheckpointInterval = 500;
    /// <summary>Rows held by the shuffle buffer that randomises the streamed training data.</summary>
    public const int ShuffleBufferSize = 4096;
    /// <summary>Channel multipliers per resolution.</summary>
    public static int[] ChannelMultipliers => new[] { 1, 2, 2 };
    /// <summary>Resolutions with self-attention for the default image size (28) and <see cref="ChannelMultipliers"/>: { 7 }.
    /// For other sizes the trainer derives them (<see cref="UNetConfig.DefaultAttentionResolutions"/>: the lowest
    /// resolution the network reaches) unless <c>DiffusionTrainer.Options.AttentionResolutions</c> is set.</summary>
    public static int[] AttentionResolutions => UNetConfig.DefaultAttentionResolutions(ImageSize, ChannelMultipliers);
}
