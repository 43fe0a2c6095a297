using System.Text.Json;
using System.Text.Json.Serialization;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Everything needed to rebuild a trained <see cref="DiffusionModel"/> besides its weights: the network,
/// the noise schedule, the image format, the columns and the default sampler. Saved as JSON in the model zip.
/// </summary>
public sealed record DiffusionModelConfig
{
    /// <summary>The U-Net's hyper-parameters.</summary>
    public required UNetConfig Network { get; init; }
    /// <summary>The beta schedule.</summary>
    public NoiseSchedule Schedule { get; init; } = NoiseSchedule.Linear;
    /// <summary>T, the number of diffusion timesteps.</summary>
    public int Timesteps { get; init; } = 1000;
    /// <summary>Image side in pixels.</summary>
    public int ImageSize { get; init; } = 28;
    /// <summary>1 (grayscale) or 3 (RGB).</summary>
    public int Channels { get; init; } = 1;
    /// <summary>Column the transformer writes.</summary>
    public string OutputColumnName { get; init; } = DiffusionDefaults.OutputColumnName;
    /// <summary>Column holding each request's seed (UInt32); when the input lacks it, row i uses DefaultSampler.Seed + i.</summary>
    public string SeedColumnName { get; init; } = DiffusionDefaults.SeedColumnName;
    /// <summary>The sampler <see cref="DiffusionModel.Transform"/> uses.</summary>
    public SamplerSettings DefaultSampler { get; init; } = new();
    /// <summary>What the network predicts; absent (Epsilon) in models saved before it existed.</summary>
    public PredictionType Prediction { get; init; } = PredictionType.Epsilon;
    /// <summary>The reverse-step variance; absent (FixedSmall) in models saved before it existed. With
    /// <see cref="VarianceType.Learned"/> the network has 2 x <see cref="Channels"/> output channels.</summary>
    public VarianceType Variance { get; init; } = VarianceType.FixedSmall;
    /// <summary>Self-conditioning (Chen, Zhang &amp; Hinton 2022, "Analog Bits", section 3): the network's input is
    /// concat(x_t, previous x_0 estimate), 2 x <see cref="Channels"/> channels; absent (false) in models saved before it existed.</summary>
    public bool SelfConditioning { get; init; }
    /// <summary>The image conditioning (e.g. SR3 super-resolution, <see cref="Diffusion.Conditioning.LowResolution"/>): its
    /// channels follow x_t (and the self-condition) in the network's input; absent (null, unconditional) in models saved
    /// before it existed.</summary>
    public Conditioning? Conditioning { get; init; }
    /// <summary>Latent diffusion (Rombach et al. 2022): when set, the network works on the latents of an autoencoder saved with
    /// the model (Network.ImageSize = ImageSize / factor, LatentChannels channels) and every sampler decodes at the end; absent
    /// (null, pixel space) in models saved before it existed.</summary>
    public LatentSpace? Latent { get; init; }
    /// <summary>The column of class labels (key-typed or integer) the model was trained on and reads from generation
    /// requests; null for a model without class conditioning (absent in models saved before it existed). The number of
    /// classes is <see cref="UNetConfig.NumClasses"/> of <see cref="Network"/>.</summary>
    public string? LabelColumnName { get; init; }
    /// <summary>The probability with which labels were replaced by the null label in training (classifier-free guidance,
    /// Ho &amp; Salimans 2022); 0 for models without class conditioning.</summary>
    public float ConditionDropProbability { get; init; }
    /// <summary>Optimizer steps the weights were trained for.</summary>
    public long TrainedSteps { get; init; }
    /// <summary>The betas were rescaled to zero terminal SNR (<see cref="DiffusionTrainer.Options.RescaleBetasZeroSnr"/>; Lin et al. 2024,
    /// Algorithm 1), so every sampler uses the rescaled schedule; absent (false) in models saved before it existed, and not written
    /// when false.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public bool RescaleBetasZeroSnr { get; init; }

    /// <summary>The training objective (<see cref="DiffusionTrainer.Options.Objective"/>): which samplers apply and what the network's
    /// output means; absent (<see cref="DiffusionObjective.Ddpm"/>) in models saved before it existed, and not written when Ddpm.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public DiffusionObjective Objective { get; init; }

    /// <summary>The forward-process schedule of this model: <see cref="Schedule"/> over <see cref="Timesteps"/> steps, rescaled to zero
    /// terminal SNR when <see cref="RescaleBetasZeroSnr"/>.</summary>
    internal Schedules.DiffusionSchedule CreateSchedule() => new(Schedule, Timesteps, RescaleBetasZeroSnr);

    /// <summary>Why classifier guidance (and training a noisy classifier for it) does not apply to this model, or null when it does: a
    /// zero-terminal-SNR schedule (guidance converts the output through 1 / sqrt(alpha_bar), infinite at the last timestep).</summary>
    internal string? ClassifierGuidanceUnsupported =>
        Objective == DiffusionObjective.FlowMatching ? "a flow-matching model (Objective FlowMatching; the noisy classifier is trained on the DDPM forward process)"
        : RescaleBetasZeroSnr ? "a zero-terminal-SNR model (RescaleBetasZeroSnr; guidance divides by sqrt(alpha_bar_T) = 0)" : null;

    /// <summary>True when the model needs format 1.3 (a feature that older releases would silently ignore).</summary>
    internal bool NeedsObjectivesFormat => RescaleBetasZeroSnr || Objective != DiffusionObjective.Ddpm;

    /// <summary>Side of the grid the network denoises: ImageSize, or ImageSize / factor for a latent model.</summary>
    internal int SampleSize => Latent is { } l ? ImageSize / l.DownsamplingFactor : ImageSize;

    /// <summary>Channels the network denoises: Channels, or the latent channels for a latent model.</summary>
    internal int SampleChannels => Latent?.LatentChannels ?? Channels;

    /// <summary>The largest T accepted (DDPM uses 1000; a sanity bound that also stops a forged file from asking for huge schedules).</summary>
    public const int MaxTimesteps = 100_000;

    /// <summary>
    /// Checks the values a model file could carry: the network config, the image format, T, the enums, the columns and the
    /// conditioning. Throws <see cref="InvalidDataException"/> naming the field, its value and what is expected. The default
    /// sampler's settings are the sampler's to check (<see cref="SamplerSettingsExtensions.Validate(SamplerSettings, DiffusionModelConfig)"/>);
    /// loading a model runs both.
    /// </summary>
    public void Validate()
    {
        static InvalidDataException Bad(string field, object? value, string expected) =>
            new($"The model's configuration has {field} = {value}; expected {expected}. The file is corrupt, was edited, or comes from an incompatible release.");

        if (Network is null) throw Bad(nameof(Network), "null", "the U-Net's hyper-parameters");
        try
        {
            Network.Validate();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"The model's network configuration is invalid: {e.Message} The file is corrupt or was edited.", e);
        }
        if (Channels != 1 && Channels != 3) throw Bad(nameof(Channels), Channels, "1 (grayscale) or 3 (RGB)");
        if (Latent is { } latent)
        {
            if (!AutoencoderConfig.SupportedFactors.Contains(latent.DownsamplingFactor))
                throw Bad("Latent.DownsamplingFactor", latent.DownsamplingFactor, "2, 4 or 8");
            if (latent.LatentChannels < 1 || latent.LatentChannels > 64) throw Bad("Latent.LatentChannels", latent.LatentChannels, "1..64");
            if (!(latent.ScaleFactor > 0 && double.IsFinite(latent.ScaleFactor))) throw Bad("Latent.ScaleFactor", latent.ScaleFactor, "a positive number");
            if (ImageSize != Network.ImageSize * latent.DownsamplingFactor)
                throw Bad(nameof(ImageSize), ImageSize, $"the network's latent grid {Network.ImageSize} times the factor {latent.DownsamplingFactor}");
        }
        else if (ImageSize != Network.ImageSize) throw Bad(nameof(ImageSize), ImageSize, $"the network's image size {Network.ImageSize}");
        if (Timesteps < 1 || Timesteps > MaxTimesteps) throw Bad(nameof(Timesteps), Timesteps, $"1..{MaxTimesteps}");
        if (!Enum.IsDefined(Schedule)) throw Bad(nameof(Schedule), Schedule, $"one of {string.Join(", ", Enum.GetNames<NoiseSchedule>())}");
        if (!Enum.IsDefined(Prediction)) throw Bad(nameof(Prediction), Prediction, $"one of {string.Join(", ", Enum.GetNames<PredictionType>())}");
        if (!Enum.IsDefined(Variance)) throw Bad(nameof(Variance), Variance, $"one of {string.Join(", ", Enum.GetNames<VarianceType>())}");
        if (TrainedSteps < 0) throw Bad(nameof(TrainedSteps), TrainedSteps, "a count >= 0");
        if (!Enum.IsDefined(Objective)) throw Bad(nameof(Objective), Objective, $"one of {string.Join(", ", Enum.GetNames<DiffusionObjective>())}");
        if (Objective == DiffusionObjective.FlowMatching)
        {
            if (Prediction != PredictionType.Epsilon) throw Bad(nameof(Prediction), Prediction, "Epsilon (unused) for a flow-matching model, which predicts the velocity");
            if (Variance != VarianceType.FixedSmall) throw Bad(nameof(Variance), Variance, "FixedSmall for a flow-matching model");
            if (SelfConditioning) throw Bad(nameof(SelfConditioning), SelfConditioning, "false for a flow-matching model");
            if (RescaleBetasZeroSnr) throw Bad(nameof(RescaleBetasZeroSnr), RescaleBetasZeroSnr, "false for a flow-matching model");
        }
        if (RescaleBetasZeroSnr && Timesteps < 2) throw Bad(nameof(Timesteps), Timesteps, "at least 2 with RescaleBetasZeroSnr");
        if (RescaleBetasZeroSnr && Prediction == PredictionType.Epsilon)
            throw Bad(nameof(Prediction), Prediction, "VPrediction or Sample with RescaleBetasZeroSnr (epsilon does not determine x_0 at alpha_bar_T = 0)");
        if (string.IsNullOrEmpty(OutputColumnName)) throw Bad(nameof(OutputColumnName), "empty", "a column name");
        if (string.IsNullOrEmpty(SeedColumnName)) throw Bad(nameof(SeedColumnName), "empty", "a column name");
        if (Network.NumClasses > 0 && string.IsNullOrEmpty(LabelColumnName))
            throw Bad(nameof(LabelColumnName), LabelColumnName ?? "null", $"a column name for the network's {Network.NumClasses} classes");
        if (Network.NumClasses == 0 && LabelColumnName is not null)
            throw Bad(nameof(LabelColumnName), LabelColumnName, "null, since the network has no class embedding (NumClasses = 0)");
        if (!(ConditionDropProbability >= 0 && ConditionDropProbability <= 1))
            throw Bad(nameof(ConditionDropProbability), ConditionDropProbability, "a probability in [0, 1]");
        if (DefaultSampler is null) throw Bad(nameof(DefaultSampler), "null", "sampler settings");
        if (Network.NumClasses == 0 && DefaultSampler is { GuidanceScale: not 1f })
            throw Bad("DefaultSampler.GuidanceScale", DefaultSampler.GuidanceScale, "1, since the model has no class conditioning");
        try
        {
            Conditioning?.Validate(ImageSize);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"The model's conditioning is invalid: {e.Message} The file is corrupt or was edited.", e);
        }
    }

    internal static readonly JsonSerializerOptions Json = new()
    {
        Converters = { new JsonStringEnumConverter() },
        WriteIndented = false,
    };

    /// <summary>This config as JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>Reads a config written by <see cref="ToJson"/>.</summary>
    public static DiffusionModelConfig FromJson(string json) =>
        JsonSerializer.Deserialize<DiffusionModelConfig>(json, Json) ?? throw new InvalidDataException("Empty model config.");
}

/// <summary>
/// How a latent diffusion model maps images to the network's space (Rombach et al. 2022, section 3 and appendix G):
/// z = ScaleFactor * mean of q(z | x) (the posterior mean of the autoencoder's encoder, not a sample), and back
/// x = Decode(z / ScaleFactor).
/// </summary>
public sealed record LatentSpace
{
    /// <summary>The autoencoder's downsampling factor f.</summary>
    public int DownsamplingFactor { get; init; }
    /// <summary>Channels of the latent.</summary>
    public int LatentChannels { get; init; }
    /// <summary>1 / standard deviation of the training latents (LDM's scale_by_std), so the diffusion sees unit-variance data.</summary>
    public double ScaleFactor { get; init; } = 1.0;
}

/// <summary>The serialisable part of <see cref="SamplerOptions"/>.</summary>
public sealed record SamplerSettings
{
    /// <summary>See <see cref="SamplerOptions.Sampler"/>.</summary>
    public SamplerKind Sampler { get; init; } = SamplerKind.Ddim;
    /// <summary>See <see cref="SamplerOptions.Steps"/>.</summary>
    public int? Steps { get; init; }
    /// <summary>See <see cref="SamplerOptions.Eta"/>.</summary>
    public float Eta { get; init; }
    /// <summary>See <see cref="SamplerOptions.Spacing"/>; absent (null) in models saved before it existed.</summary>
    public TimestepSpacing? Spacing { get; init; }
    /// <summary>See <see cref="SamplerOptions.Seed"/>.</summary>
    public uint Seed { get; init; }
    /// <summary>See <see cref="SamplerOptions.ClipSample"/>.</summary>
    public bool ClipSample { get; init; } = true;
    /// <summary>See <see cref="SamplerOptions.BatchSize"/>.</summary>
    public int BatchSize { get; init; } = 64;
    /// <summary>See <see cref="SamplerOptions.DynamicThresholding"/>; absent (false) in models saved before it existed.</summary>
    public bool DynamicThresholding { get; init; }
    /// <summary>See <see cref="SamplerOptions.GuidanceScale"/>; absent (1) in models saved before it existed.</summary>
    public float GuidanceScale { get; init; } = 1f;
    /// <summary>See <see cref="SamplerOptions.Precision"/>; absent (Fp32) in models saved before it existed, and not written
    /// when Fp32, so float32 models keep the config they had.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public Precision Precision { get; init; }

    // diffusers' scheduler options (below): not written while at their defaults, so configs without them stay as they were.

    /// <summary>See <see cref="SamplerOptions.DynamicThresholdingRatio"/>; null (absent) means its default, 0.995.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? DynamicThresholdingRatio { get; init; }

    /// <summary>See <see cref="SamplerOptions.SampleMaxValue"/>; null (absent) means its default, no bound.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? SampleMaxValue { get; init; }

    /// <summary>See <see cref="SamplerOptions.SetAlphaToOne"/>; null (absent) means its default, true.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public bool? SetAlphaToOne { get; init; }

    /// <summary>See <see cref="SamplerOptions.UseKarrasSigmas"/>.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public bool UseKarrasSigmas { get; init; }

    /// <summary>See <see cref="SamplerOptions.UseLuLambdas"/>.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public bool UseLuLambdas { get; init; }

    /// <summary>See <see cref="SamplerOptions.FinalSigmasType"/>.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public FinalSigmasType FinalSigmasType { get; init; }

    /// <summary>See <see cref="SamplerOptions.LowerOrderFinal"/>; null (absent) means its default, true.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public bool? LowerOrderFinal { get; init; }
}
