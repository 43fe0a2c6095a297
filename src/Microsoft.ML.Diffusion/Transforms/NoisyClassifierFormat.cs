using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Diffusion.Transforms;

/// <summary>The binary layout of a <see cref="NoisyClassifierModel"/> inside an ML.NET model zip (versioned, like
/// <see cref="DiffusionModelFormat"/>): string NoisyClassifierModelConfig as JSON (network, schedule, T, columns, steps), the
/// weight manifest, stream NoisyClassifierWeights.bin (see <see cref="NetworkModelFormat{TConfig, TNetwork}"/>).</summary>
internal static class NoisyClassifierFormat
{
    /// <summary>The stream holding the network's weights, TorchSharp's module format.</summary>
    public const string WeightsStreamName = "NoisyClassifierWeights.bin";
    private const uint VersionWritten = 0x00010001;   // 1.1: config JSON + weight manifest + weights (the first version)

    public static VersionInfo GetVersionInfo() => new(
        modelSignature: "DIFFNCLS",
        verWrittenCur: VersionWritten,
        verReadableCur: VersionWritten,
        verWeCanReadBack: VersionWritten,
        loaderSignature: NoisyClassifierModel.LoaderSignature,
        loaderAssemblyName: typeof(NoisyClassifierModel).Assembly.FullName);

    private static readonly NetworkModelFormat<NoisyClassifierModelConfig, NoisyClassifierNetwork> Format = new(
        "noisy classifier", WeightsStreamName, VersionWritten, GetVersionInfo(),
        c => c.ToJson(), NoisyClassifierModelConfig.FromJson, c => c.Validate(),
        c => c.Network.MinimumParameterCount(), c => new NoisyClassifierNetwork(c.Network));

    public static void Save(ModelSaveContext ctx, NoisyClassifierModelConfig config, NoisyClassifierNetwork network) => Format.Save(ctx, config, network);

    public static (NoisyClassifierModelConfig Config, NoisyClassifierNetwork Network) Load(ModelLoadContext ctx) => Format.Load(ctx);
}
