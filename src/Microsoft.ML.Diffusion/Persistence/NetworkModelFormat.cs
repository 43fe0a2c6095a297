using Microsoft.ML.Runtime;
using TorchSharp;

namespace Microsoft.ML.Diffusion.Persistence;

/// <summary>
/// The layout shared by the models that are one network and its config inside an ML.NET model zip
/// (<see cref="Transforms.AutoencoderFormat"/>, <see cref="Transforms.NoisyClassifierFormat"/>): the config as a JSON string, the weight manifest,
/// then the weights in a binary stream (TorchSharp's module format). Loading checks the stream against the manifest and the
/// config against the manifest's size before it allocates the network, so a forged file cannot make it allocate much.
/// </summary>
/// <typeparam name="TConfig">The model's config record.</typeparam>
/// <typeparam name="TNetwork">The network.</typeparam>
internal sealed class NetworkModelFormat<TConfig, TNetwork> where TNetwork : torch.nn.Module
{
    /// <summary>Describes one model kind.</summary>
    /// <param name="noun">What the model is called in error messages ("autoencoder").</param>
    /// <param name="weightsStreamName">The stream holding the weights.</param>
    /// <param name="versionWritten">The format version this release writes and reads.</param>
    /// <param name="versionInfo">The zip entry's version info.</param>
    /// <param name="toJson">Serialises the config.</param>
    /// <param name="fromJson">Parses the config (may throw <see cref="System.Text.Json.JsonException"/>).</param>
    /// <param name="validate">Checks a parsed config.</param>
    /// <param name="minimumParameterCount">A lower bound on the parameters of the config's network, computed without building it.</param>
    /// <param name="create">Builds the network of a config.</param>
    public NetworkModelFormat(string noun, string weightsStreamName, uint versionWritten, VersionInfo versionInfo,
        Func<TConfig, string> toJson, Func<string, TConfig> fromJson, Action<TConfig> validate,
        Func<TConfig, double> minimumParameterCount, Func<TConfig, TNetwork> create)
    {
        Noun = noun;
        WeightsStreamName = weightsStreamName;
        VersionWritten = versionWritten;
        VersionInfo = versionInfo;
        _toJson = toJson;
        _fromJson = fromJson;
        _validate = validate;
        _minimumParameterCount = minimumParameterCount;
        _create = create;
    }

    private readonly Func<TConfig, string> _toJson;
    private readonly Func<string, TConfig> _fromJson;
    private readonly Action<TConfig> _validate;
    private readonly Func<TConfig, double> _minimumParameterCount;
    private readonly Func<TConfig, TNetwork> _create;

    /// <summary>What the model is called in error messages.</summary>
    public string Noun { get; }

    /// <summary>The stream holding the network's weights, TorchSharp's module format.</summary>
    public string WeightsStreamName { get; }

    /// <summary>The format version this release writes and reads.</summary>
    public uint VersionWritten { get; }

    /// <summary>The zip entry's version info.</summary>
    public VersionInfo VersionInfo { get; }

    /// <summary>Writes the config, the manifest and the weights.</summary>
    public void Save(ModelSaveContext ctx, TConfig config, TNetwork network)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.CheckAtModel();
        ctx.SetVersionInfo(VersionInfo);
        // string: the config as JSON
        ctx.Writer.Write(_toJson(config));
        // the weight manifest (WeightManifest): int count; per tensor string name, int rank, long[rank] shape
        WeightManifest.Write(ctx.Writer, network);
        // the weights stream (TorchSharp module.save format)
        ctx.SaveBinaryStream(WeightsStreamName, w => network.save(w));
    }

    /// <summary>Reads what <see cref="Save"/> wrote; errors name the model and what is wrong with the file.</summary>
    public (TConfig Config, TNetwork Network) Load(ModelLoadContext ctx)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        TorchRuntime.EnsureNativeBackend();
        if (ctx.Header.ModelVerReadable > VersionWritten)
            throw new InvalidDataException(
                $"This {Noun} was saved by a newer Microsoft.ML.Diffusion (format 0x{ctx.Header.ModelVerWritten:X8}); " +
                $"this release reads format 0x{VersionWritten:X8}. Update the Microsoft.ML.Diffusion package.");
        ctx.CheckAtModel(VersionInfo);
        TConfig config;
        try
        {
            config = _fromJson(ctx.Reader.ReadString());
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InvalidDataException($"The {Noun}'s configuration in the zip is corrupt.", e);
        }
        _validate(config);
        var manifest = WeightManifest.Read(ctx.Reader);
        long elements = TorchWeightsFormat.ElementCount(manifest, $"The {Noun}'s weight manifest");
        // Nothing is allocated by a size read from the file before the stream matches the manifest and the config's
        // network fits in what the manifest holds.
        string what = $"The {Noun}'s weights stream '{WeightsStreamName}'";
        WeightManifest.ReadStream(ctx, WeightsStreamName, r => TorchWeightsFormat.Check(r, manifest, what), what);
        double minimum = _minimumParameterCount(config);
        if (minimum > elements)
            throw new InvalidDataException(
                $"The {Noun}'s network config needs at least {minimum:G6} parameters but the zip holds {elements} weights; the file is corrupt or was edited.");
        var network = _create(config);
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
