using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Diffusion.Persistence;

/// <summary>The binary layout of a <see cref="NoisyClassifierModel"/> inside an ML.NET model zip (versioned, like
/// <see cref="DiffusionModelFormat"/>).</summary>
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

    public static void Save(ModelSaveContext ctx, NoisyClassifierModelConfig config, NoisyClassifierNetwork network)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo());
        // string: NoisyClassifierModelConfig as JSON (network, schedule, T, columns, steps)
        ctx.Writer.Write(config.ToJson());
        // the weight manifest (WeightManifest): int count; per tensor string name, int rank, long[rank] shape
        WeightManifest.Write(ctx.Writer, network);
        // stream NoisyClassifierWeights.bin: the weights (TorchSharp module.save format)
        ctx.SaveBinaryStream(WeightsStreamName, w => network.save(w));
    }

    public static (NoisyClassifierModelConfig Config, NoisyClassifierNetwork Network) Load(ModelLoadContext ctx)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        if (ctx.Header.ModelVerReadable > VersionWritten)
            throw new InvalidDataException(
                $"This noisy classifier was saved by a newer Microsoft.ML.Diffusion (format 0x{ctx.Header.ModelVerWritten:X8}); " +
                $"this release reads format 0x{VersionWritten:X8}. Update the Microsoft.ML.Diffusion package.");
        ctx.CheckAtModel(GetVersionInfo());
        NoisyClassifierModelConfig config;
        try
        {
            config = NoisyClassifierModelConfig.FromJson(ctx.Reader.ReadString());
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InvalidDataException("The noisy classifier's configuration in the zip is corrupt.", e);
        }
        config.Validate();
        var manifest = WeightManifest.Read(ctx.Reader);
        long elements = TorchWeightsFormat.ElementCount(manifest, "The noisy classifier's weight manifest");
        // Nothing is allocated by a size read from the file before the stream matches the manifest and the config's
        // network fits in what the manifest holds.
        string what = $"The noisy classifier's weights stream '{WeightsStreamName}'";
        WeightManifest.ReadStream(ctx, WeightsStreamName, r => TorchWeightsFormat.Check(r, manifest, what), what);
        double minimum = config.Network.MinimumParameterCount();
        if (minimum > elements)
            throw new InvalidDataException(
                $"The noisy classifier's network config needs at least {minimum:G6} parameters but the zip holds {elements} weights; the file is corrupt or was edited.");
        var network = new NoisyClassifierNetwork(config.Network);
        try
        {
            WeightManifest.CheckModule(network, manifest);
            WeightManifest.ReadStream(ctx, WeightsStreamName, r => network.load(r), what);
            return (config, network);
        }
        catch
        {
            network.Dispose();
            throw;
        }
    }
}
