using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Diffusion.Transforms;

/// <summary>
/// The binary layout of a <see cref="DiffusionModel"/> inside an ML.NET model zip (ModelSaveContext), versioned
/// so that a later release can read it or refuse it with a clear message.
/// </summary>
internal static class DiffusionModelFormat
{
    /// <summary>The stream holding the network's (EMA) weights, TorchSharp's module format.</summary>
    public const string WeightsStreamName = "TorchWeights.bin";
    private const uint VersionWritten = 0x00010003;   // 1.3: the config may carry RescaleBetasZeroSnr and Objective
    private const uint VersionLatent = 0x00010002;    // 1.2: a latent model adds the sub-model "Autoencoder"
    private const uint VersionPixelSpace = 0x00010001;   // 1.1: config JSON + weight manifest + weights (what pixel-space models still write)
    private const string AutoencoderEntryName = "Autoencoder";
    private const int BlockVersion = 1;

    /// <summary>The version a loader accepts (1.1, 1.2 and 1.3).</summary>
    public static VersionInfo GetVersionInfo() => GetVersionInfo(VersionWritten);

    /// <summary>A pixel-space model is written as 1.1, exactly as before latent models existed, so older releases still read
    /// it; a latent model is written as 1.2 (readable by 1.2 and later), which older releases refuse with a clear message; a model
    /// whose config needs a feature of 1.3 (zero terminal SNR or flow matching, which an older release would silently ignore and so
    /// sample from the wrong schedule or with the wrong sampler) is written as 1.3, readable by 1.3 and later.</summary>
    private static VersionInfo GetVersionInfo(uint version) => new(
        modelSignature: "DIFFMODL",
        verWrittenCur: version,
        verReadableCur: version,
        verWeCanReadBack: 0x00010001,
        loaderSignature: DiffusionModel.LoaderSignature,
        loaderAssemblyName: typeof(DiffusionModel).Assembly.FullName);

    public static void Save(ModelSaveContext ctx, DiffusionModelConfig config, UNet network, AutoencoderModel? autoencoder = null)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.CheckAtModel();
        ctx.SetVersionInfo(GetVersionInfo(config.NeedsObjectivesFormat ? VersionWritten : config.Latent is null ? VersionPixelSpace : VersionLatent));

        // int: block version
        ctx.Writer.Write(BlockVersion);
        // string: DiffusionModelConfig as JSON (network, schedule, image format, columns, default sampler)
        ctx.Writer.Write(config.ToJson());
        // int: number of weight tensors; then for each: string name, int rank, long[rank] shape (WeightManifest).
        // Checked against the config's network before any weight is read.
        WeightManifest.Write(ctx.Writer, network);
        // stream TorchWeights.bin: the weights (TorchSharp module.save format)
        ctx.SaveBinaryStream(WeightsStreamName, w => network.save(w));
        // 1.3: the same blocks; the config JSON may carry RescaleBetasZeroSnr and Objective (older releases would ignore them)
        // 1.2 and later, latent models only: sub-model "Autoencoder" (AutoencoderFormat), so both models travel in one zip
        if (config.Latent is not null)
            ctx.SaveModel(autoencoder ?? throw new ArgumentNullException(nameof(autoencoder), "A latent model is saved with its autoencoder."), AutoencoderEntryName);
    }

    public static (DiffusionModelConfig Config, UNet Network, AutoencoderModel? Autoencoder) Load(IHostEnvironment env, ModelLoadContext ctx)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(ctx);
        TorchRuntime.EnsureNativeBackend();
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
        config.DefaultSampler.Validate(config);
        if (config.NeedsObjectivesFormat && ctx.Header.ModelVerWritten < VersionWritten)
            throw new InvalidDataException(
                $"The model's configuration asks for a 1.3 feature (RescaleBetasZeroSnr or Objective {config.Objective}), but the zip has format 0x{ctx.Header.ModelVerWritten:X8}; the file is corrupt or was edited.");

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
            return (config, network, config.Latent is null ? null : LoadAutoencoder(env, ctx, config));
        }
        catch
        {
            network.Dispose();
            throw;
        }
    }

    /// <summary>The nested autoencoder of a latent model, checked against the config's latent space.</summary>
    private static AutoencoderModel LoadAutoencoder(IHostEnvironment env, ModelLoadContext ctx, DiffusionModelConfig config)
    {
        var latent = config.Latent!;
        if (ctx.Header.ModelVerWritten < VersionLatent)
            throw new InvalidDataException($"The model's configuration describes a latent model, but the zip has format 0x{ctx.Header.ModelVerWritten:X8}, which holds no autoencoder; the file is corrupt or was edited.");
        AutoencoderModel? autoencoder;
        try
        {
            if (!ctx.ContainsModel(AutoencoderEntryName))
                throw new InvalidDataException($"The latent diffusion model's zip has no '{AutoencoderEntryName}' sub-model; the file is corrupt or incomplete.");
            ctx.LoadModel<AutoencoderModel, SignatureLoadModel>(env, out autoencoder, AutoencoderEntryName);
        }
        catch (System.Reflection.TargetInvocationException e) when (e.InnerException is InvalidDataException inner)
        {
            throw new InvalidDataException($"The latent diffusion model's autoencoder: {inner.Message}", inner);
        }
        if (autoencoder.DownsamplingFactor != latent.DownsamplingFactor || autoencoder.LatentChannels != latent.LatentChannels
            || autoencoder.ImageSize != config.ImageSize || autoencoder.Channels != config.Channels)
        {
            autoencoder.Dispose();
            throw new InvalidDataException(
                $"The zip's autoencoder ({autoencoder.Channels}x{autoencoder.ImageSize}x{autoencoder.ImageSize} -> {autoencoder.LatentChannels} channels, factor {autoencoder.DownsamplingFactor}) " +
                $"does not match the diffusion model ({config.Channels}x{config.ImageSize}x{config.ImageSize}, {latent.LatentChannels} latent channels, factor {latent.DownsamplingFactor}); the file is corrupt or was edited.");
        }
        return autoencoder;
    }

    /// <summary>Runs <paramref name="read"/> on the weights stream (<see cref="WeightManifest.ReadStream"/>).</summary>
    private static void ReadWeights(ModelLoadContext ctx, Action<BinaryReader> read, string what) =>
        WeightManifest.ReadStream(ctx, WeightsStreamName, read, what);
}
