using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Persistence;

/// <summary>
/// The binary layout of a <see cref="DiffusionModel"/> inside an ML.NET model zip (ModelSaveContext), versioned
/// so that a later release can read it or refuse it with a clear message.
/// </summary>
internal static class DiffusionModelFormat
{
    /// <summary>The stream holding the network's (EMA) weights, TorchSharp's module format.</summary>
    public const string WeightsStreamName = "TorchWeights.bin";
    private const uint VersionWritten = 0x00010001;   // 1.1: config JSON + weight manifest + weights
    private const uint VersionReadable = 0x00010001;
    private const int BlockVersion = 1;

    public static VersionInfo GetVersionInfo() => new(
        modelSignature: "DIFFMODL",
        verWrittenCur: VersionWritten,
        verReadableCur: VersionReadable,
        verWeCanReadBack: 0x00010001,
        loaderSignature: DiffusionModel.LoaderSignature,
        loaderAssemblyName: typeof(DiffusionModel).Assembly.FullName);

    public static void Save(ModelSaveContext ctx, DiffusionModelConfig config, UNet network)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo());

        // int: block version
        ctx.Writer.Write(BlockVersion);
        // string: DiffusionModelConfig as JSON (network, schedule, image format, columns, default sampler)
        ctx.Writer.Write(config.ToJson());
        // int: number of weight tensors; then for each: string name, int rank, long[rank] shape (WeightManifest).
        // Checked against the config's network before any weight is read.
        WeightManifest.Write(ctx.Writer, network);
        // stream TorchWeights.bin: the weights (TorchSharp module.save format)
        ctx.SaveBinaryStream(WeightsStreamName, w => network.save(w));
    }

    public static (DiffusionModelConfig Config, UNet Network) Load(IHostEnvironment env, ModelLoadContext ctx)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(ctx);
        if (ctx.Header.ModelVerReadable > VersionWritten)
            throw new InvalidDataException(
                $"This model was saved by a newer Microsoft.ML.Diffusion (format 0x{ctx.Header.ModelVerWritten:X8}, readable by 0x{ctx.Header.ModelVerReadable:X8} and later); " +
                $"this release reads format 0x{VersionWritten:X8}. Update the Microsoft.ML.Diffusion package.");
        ctx.CheckAtModel(GetVersionInfo());

        int block = ctx.Reader.ReadInt32();
        if (block != BlockVersion)
            throw new InvalidDataException($"Unknown diffusion model block version {block}; expected {BlockVersion}.");
        DiffusionModelConfig config;
        try
        {
            config = DiffusionModelConfig.FromJson(ctx.Reader.ReadString());
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InvalidDataException("The diffusion model's configuration in the zip is corrupt.", e);
        }
        config.Validate();
        try
        {
            config.Conditioning?.Validate(config.ImageSize);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"The diffusion model's conditioning in the zip is invalid: {e.Message}", e);
        }

        var manifest = WeightManifest.Read(ctx.Reader);
        long manifestElements = TorchWeightsFormat.ElementCount(manifest, "The model's weight manifest");

        // Before anything is allocated by a size read from the file: the weights stream must hold exactly the manifest's
        // tensors, data included (so the manifest cannot claim more than the file holds), and the config's network must not
        // need more parameters than that (so an edited config cannot make the network below huge).
        string what = $"The model's weights stream '{WeightsStreamName}'";
        ReadWeights(ctx, r => TorchWeightsFormat.Check(r, manifest, what), what);
        double minimum = config.Network.MinimumParameterCount();
        if (minimum > manifestElements)
            throw new InvalidDataException(
                $"The model's network config needs at least {minimum:G6} parameters but the zip holds {manifestElements} weights; " +
                "the file is corrupt or was edited.");

        var network = new UNet(config.Network);
        try
        {
            WeightManifest.CheckModule(network, manifest);
            ReadWeights(ctx, r => network.load(r), what);
            return (config, network);
        }
        catch
        {
            network.Dispose();
            throw;
        }
    }

    /// <summary>Runs <paramref name="read"/> on the weights stream (<see cref="WeightManifest.ReadStream"/>).</summary>
    private static void ReadWeights(ModelLoadContext ctx, Action<BinaryReader> read, string what) =>
        WeightManifest.ReadStream(ctx, WeightsStreamName, read, what);
}
