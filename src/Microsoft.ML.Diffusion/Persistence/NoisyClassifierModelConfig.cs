using System.Text.Json;
using Microsoft.ML.Diffusion.Models;

namespace Microsoft.ML.Diffusion;

/// <summary>Everything needed to rebuild a trained <see cref="NoisyClassifierModel"/> besides its weights: the network, the diffusion
/// process it was trained for (schedule and T) and its columns. Saved as JSON in the model zip.</summary>
public sealed record NoisyClassifierModelConfig
{
    /// <summary>The network's hyper-parameters (image size, channels and classes included).</summary>
    public required NoisyClassifierConfig Network { get; init; }
    /// <summary>The noise schedule of the diffusion model it was trained for.</summary>
    public NoiseSchedule Schedule { get; init; } = NoiseSchedule.Linear;
    /// <summary>T of the diffusion model it was trained for.</summary>
    public int Timesteps { get; init; } = 1000;
    /// <summary>The image column <see cref="NoisyClassifierModel.Transform"/> reads.</summary>
    public string ImageColumnName { get; init; } = DiffusionDefaults.ImageColumnName;
    /// <summary>The label column it was trained on.</summary>
    public string LabelColumnName { get; init; } = DiffusionDefaults.LabelColumnName;
    /// <summary>The predicted-label column <see cref="NoisyClassifierModel.Transform"/> adds.</summary>
    public string PredictedLabelColumnName { get; init; } = DiffusionDefaults.PredictedLabelColumnName;
    /// <summary>The score column (class probabilities) <see cref="NoisyClassifierModel.Transform"/> adds.</summary>
    public string ScoreColumnName { get; init; } = DiffusionDefaults.ScoreColumnName;
    /// <summary>Optimizer steps the weights were trained for.</summary>
    public long TrainedSteps { get; init; }

    /// <summary>Checks the values a model file could carry; throws <see cref="InvalidDataException"/> naming the field.</summary>
    public void Validate()
    {
        static InvalidDataException Bad(string field, object? value, string expected) =>
            new($"The noisy classifier's configuration has {field} = {value}; expected {expected}. The file is corrupt or was edited.");

        if (Network is null) throw Bad(nameof(Network), "null", "the network's hyper-parameters");
        try
        {
            Network.Validate();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"The noisy classifier's network configuration is invalid: {e.Message} The file is corrupt or was edited.", e);
        }
        if (Network.InChannels != 1 && Network.InChannels != 3) throw Bad("Network.InChannels", Network.InChannels, "1 (grayscale) or 3 (RGB)");
        if (Timesteps < 1 || Timesteps > DiffusionModelConfig.MaxTimesteps) throw Bad(nameof(Timesteps), Timesteps, $"1..{DiffusionModelConfig.MaxTimesteps}");
        if (!Enum.IsDefined(Schedule)) throw Bad(nameof(Schedule), Schedule, $"one of {string.Join(", ", Enum.GetNames<NoiseSchedule>())}");
        if (string.IsNullOrEmpty(ImageColumnName)) throw Bad(nameof(ImageColumnName), "empty", "a column name");
        if (string.IsNullOrEmpty(LabelColumnName)) throw Bad(nameof(LabelColumnName), "empty", "a column name");
        if (string.IsNullOrEmpty(PredictedLabelColumnName)) throw Bad(nameof(PredictedLabelColumnName), "empty", "a column name");
        if (string.IsNullOrEmpty(ScoreColumnName) || ScoreColumnName == PredictedLabelColumnName)
            throw Bad(nameof(ScoreColumnName), ScoreColumnName, "a column name other than the predicted label's");
        if (TrainedSteps < 0) throw Bad(nameof(TrainedSteps), TrainedSteps, "a count >= 0");
    }

    /// <summary>This config as JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, DiffusionModelConfig.Json);

    /// <summary>Reads a config written by <see cref="ToJson"/>.</summary>
    public static NoisyClassifierModelConfig FromJson(string json) =>
        JsonSerializer.Deserialize<NoisyClassifierModelConfig>(json, DiffusionModelConfig.Json) ?? throw new InvalidDataException("Empty noisy classifier config.");
}
