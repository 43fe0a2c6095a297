using System.Globalization;

namespace Microsoft.ML.Diffusion.Onnx;

/// <summary>
/// The metadata_props keys every ONNX file the library writes carries, so a file describes itself: <see cref="Kind"/> says
/// which network it holds, <see cref="Producer"/> that this library wrote it, and each kind adds its model's config as JSON
/// plus the facts a user needs to run it (schedule, T, prediction type, image format, latent scale) under their own keys.
/// </summary>
internal static class OnnxMetadata
{
    /// <summary>Which network the file holds: one of <see cref="DiffusionUNet"/>, <see cref="AutoencoderEncoder"/>,
    /// <see cref="AutoencoderDecoder"/>, <see cref="NoisyClassifier"/>.</summary>
    public const string Kind = "model_kind";

    /// <summary>The ModelProto producer_name of the library's files.</summary>
    public const string Producer = "Microsoft.ML.Diffusion";

    /// <summary>The denoising U-Net of a <see cref="DiffusionModel"/>.</summary>
    public const string DiffusionUNet = "diffusion_unet";

    /// <summary>The encoder of an <see cref="AutoencoderModel"/>.</summary>
    public const string AutoencoderEncoder = "autoencoder_encoder";

    /// <summary>The decoder of an <see cref="AutoencoderModel"/>.</summary>
    public const string AutoencoderDecoder = "autoencoder_decoder";

    /// <summary>The network of a <see cref="NoisyClassifierModel"/>.</summary>
    public const string NoisyClassifier = "noisy_classifier";

    /// <summary>The kinds the library writes.</summary>
    public static readonly string[] Kinds = { DiffusionUNet, AutoencoderEncoder, AutoencoderDecoder, NoisyClassifier };

    /// <summary>The type of the <c>t</c> input: <see cref="TimestepFloat"/> (real-valued timesteps 0..T-1, whole or not).</summary>
    public const string TimestepType = "timestep_type";

    /// <summary>The value of <see cref="TimestepType"/>.</summary>
    public const string TimestepFloat = "float32";

    /// <summary>An integer as metadata text (invariant culture).</summary>
    public static string Text(int value) => value.ToString(CultureInfo.InvariantCulture);

    /// <summary>A double as metadata text (invariant culture, round-trip).</summary>
    public static string Text(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>A boolean as metadata text ("true" / "false").</summary>
    public static string Text(bool value) => value ? "true" : "false";
}
