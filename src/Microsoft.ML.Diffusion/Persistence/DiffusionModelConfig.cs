using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.Diffusion.Models;

namespace Microsoft.ML.Diffusion.Persistence;

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
    /// <summary>Optimizer steps the weights were trained for.</summary>
    public long TrainedSteps { get; init; }

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
    /// <summary>See <see cref="SamplerOptions.Precision"/>; absent (Fp32) in models saved before it existed, and not written
    /// when Fp32, so float32 models keep the config they had.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public Precision Precision { get; init; }

    /// <summary>Copies the serialisable settings of <paramref name="o"/>.</summary>
    public static SamplerSettings From(SamplerOptions o) => new()
    {
        Sampler = o.Sampler, Steps = o.Steps, Eta = o.Eta, Spacing = o.Spacing, Seed = o.Seed, ClipSample = o.ClipSample, BatchSize = o.BatchSize,
        DynamicThresholding = o.DynamicThresholding, Precision = o.Precision,
    };

    /// <summary>New options with these settings.</summary>
    public SamplerOptions ToOptions() => new()
    {
        Sampler = Sampler, Steps = Steps, Eta = Eta, Spacing = Spacing, Seed = Seed, ClipSample = ClipSample, BatchSize = BatchSize,
        DynamicThresholding = DynamicThresholding, Precision = Precision,
    };
}
