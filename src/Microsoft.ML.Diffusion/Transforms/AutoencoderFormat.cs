using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Diffusion.Transforms;

/// <summary>The binary layout of an <see cref="AutoencoderModel"/> inside an ML.NET model zip (versioned, like
/// <see cref="DiffusionModelFormat"/>): string AutoencoderModelConfig as JSON (network, columns, KL weight, steps), the
/// weight manifest, stream AutoencoderWeights.bin (see <see cref="NetworkModelFormat{TConfig, TNetwork}"/>).</summary>
internal static class AutoencoderFormat
{
    /// <summary>The stream holding the network's weights, TorchSharp's module format.</summary>
    public const string WeightsStreamName = "AutoencoderWeights.bin";
    private const uint VersionWritten = 0x00010001;   // 1.1: config JSON + weight manifest + weights

    public static VersionInfo GetVersionInfo() => new(
        modelSignature: "DIFFAUTO",
        verWrittenCur: VersionWritten,
        verReadableCur: VersionWritten,
        verWeCanReadBack: VersionWritten,
        loaderSignature: AutoencoderModel.LoaderSignature,
        loaderAssemblyName: typeof(AutoencoderModel).Assembly.FullName);

    private static readonly NetworkModelFormat<AutoencoderModelConfig, KlAutoencoder> Format = new(
        "autoencoder", WeightsStreamName, VersionWritten, GetVersionInfo(),
        c => c.ToJson(), AutoencoderModelConfig.FromJson, c => c.Validate(),
        c => c.Network.MinimumParameterCount(), c => new KlAutoencoder(c.Network));

    public static void Save(ModelSaveContext ctx, AutoencoderModelConfig config, KlAutoencoder network) => Format.Save(ctx, config, network);

    public static (AutoencoderModelConfig Config, KlAutoencoder Network) Load(ModelLoadContext ctx) => Format.Load(ctx);
}
