using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Diffusion.Persistence;

/// <summary>The binary layout of an <see cref="AutoencoderModel"/> inside an ML.NET model zip (versioned, like
/// <see cref="DiffusionModelFormat"/>).</summary>
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

    public static void Save(ModelSaveContext ctx, AutoencoderModelConfig config, KlAutoencoder network)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo());
        // string: AutoencoderModelConfig as JSON (network, columns, KL weight, steps)
        ctx.Writer.Write(config.ToJson());
        // the weight manifest (WeightManifest): int count; per tensor string name, int rank, long[rank] shape
        WeightManifest.Write(ctx.Writer, network);
        // stream AutoencoderWeights.bin: the weights (TorchSharp module.save format)
        ctx.SaveBinaryStream(WeightsStreamName, w => network.save(w));
    }

    public static (AutoencoderModelConfig Config, KlAutoencoder Network) Load(ModelLoadContext ctx)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        if (ctx.Header.ModelVerReadable > VersionWritten)
            throw new InvalidDataException(
                $"This autoencoder was saved by a newer Microsoft.ML.Diffusion (format 0x{ctx.Header.ModelVerWritten:X8}); " +
                $"this release reads format 0x{VersionWritten:X8}. Update the Microsoft.ML.Diffusion package.");
        ctx.CheckAtModel(GetVersionInfo());
        AutoencoderModelConfig config;
        try
        {
            config = AutoencoderModelConfig.FromJson(ctx.Reader.ReadString());
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InvalidDataException("The autoencoder's configuration in the zip is corrupt.", e);
        }
        config.Validate();
        var manifest = WeightManifest.Read(ctx.Reader);
        long elements = TorchWeightsFormat.ElementCount(manifest, "The autoencoder's weight manifest");
        // Nothing is allocated by a size read from the file before the stream matches the manifest and the config's
        // network fits in what the manifest holds.
        string what = $"The autoencoder's weights stream '{WeightsStreamName}'";
        WeightManifest.ReadStream(ctx, WeightsStreamName, r => TorchWeightsFormat.Check(r, manifest, what), what);
        double minimum = config.Network.MinimumParameterCount();
        if (minimum > elements)
            throw new InvalidDataException(
                $"The autoencoder's network config needs at least {minimum:G6} parameters but the zip holds {elements} weights; the file is corrupt or was edited.");
        var network = new KlAutoencoder(config.Network);
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
