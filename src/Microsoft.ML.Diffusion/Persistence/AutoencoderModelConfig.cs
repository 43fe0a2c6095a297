using System.Text.Json;
using Microsoft.ML.Diffusion.Models;

namespace Microsoft.ML.Diffusion;

/// <summary>Everything needed to rebuild a trained <see cref="AutoencoderModel"/> besides its weights; saved as JSON in the model zip.</summary>
public sealed record AutoencoderModelConfig
{
    /// <summary>The network's hyper-parameters.</summary>
    public required AutoencoderConfig Network { get; init; }
    /// <summary>The image column <see cref="AutoencoderModel.Transform"/> reads.</summary>
    public string InputColumnName { get; init; } = DiffusionDefaults.ImageColumnName;
    /// <summary>The column of reconstructed images <see cref="AutoencoderModel.Transform"/> adds.</summary>
    public string OutputColumnName { get; init; } = DiffusionDefaults.ReconstructionColumnName;
    /// <summary>The KL weight beta it was trained with.</summary>
    public double KlWeight { get; init; }
    /// <summary>Optimizer steps the weights were trained for.</summary>
    public long TrainedSteps { get; init; }

    /// <summary>Checks the values a model file could carry; throws <see cref="InvalidDataException"/> naming the field.</summary>
    public void Validate()
    {
        if (Network is null) throw new InvalidDataException("The autoencoder's configuration has no network; the file is corrupt.");
        try
        {
            Network.Validate();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"The autoencoder's network configuration is invalid: {e.Message} The file is corrupt or was edited.", e);
        }
        if (string.IsNullOrEmpty(InputColumnName) || string.IsNullOrEmpty(OutputColumnName))
            throw new InvalidDataException("The autoencoder's configuration has an empty column name; the file is corrupt.");
        if (TrainedSteps < 0) throw new InvalidDataException($"The autoencoder's configuration has TrainedSteps = {TrainedSteps}; expected >= 0.");
    }

    /// <summary>This config as JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, DiffusionModelConfig.Json);

    /// <summary>Reads a config written by <see cref="ToJson"/>.</summary>
    public static AutoencoderModelConfig FromJson(string json) =>
        JsonSerializer.Deserialize<AutoencoderModelConfig>(json, DiffusionModelConfig.Json) ?? throw new InvalidDataException("Empty autoencoder config.");
}
