using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;

namespace Microsoft.ML.Diffusion.Onnx;

/// <summary>
/// An .onnx file written by this library, read back and checked: it parses as an ONNX model, its metadata names a network
/// kind the library writes (<see cref="OnnxMetadata.Kind"/>), and ONNX Runtime can open it. Every failure is one
/// <see cref="InvalidDataException"/> (or <see cref="FileNotFoundException"/>) whose message names the file and what is wrong:
/// random bytes, a truncated file, an ONNX model of another graph without the library's metadata, a network of another kind
/// than the one asked for. Used to check an export (the CLI's export round trip) and by tests; the library's own engines run
/// the in-memory export and open no files.
/// </summary>
internal sealed class OnnxModelFile
{
    private OnnxModelFile(string path, byte[] bytes, ModelProto model)
    {
        Path = path;
        Bytes = bytes;
        Model = model;
        Metadata = model.MetadataProps.GroupBy(p => p.Key).ToDictionary(g => g.Key, g => g.Last().Value);
        Kind = Metadata[OnnxMetadata.Kind];
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>The file's bytes.</summary>
    public byte[] Bytes { get; }

    /// <summary>The parsed model.</summary>
    public ModelProto Model { get; }

    /// <summary>The metadata_props.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The network kind (<see cref="OnnxMetadata.Kinds"/>).</summary>
    public string Kind { get; }

    /// <summary>
    /// Reads and checks <paramref name="path"/>; with <paramref name="expectedKind"/> (one of <see cref="OnnxMetadata.Kinds"/>) the
    /// file must hold that kind of network. ONNX Runtime opens the model once, so a graph it cannot run fails here.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not an ONNX model, not one this library wrote, of another kind, or one
    /// ONNX Runtime refuses; the message names the file.</exception>
    public static OnnxModelFile Open(string path, string? expectedKind = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"The ONNX file '{path}' does not exist.", path);
        var bytes = File.ReadAllBytes(path);
        ModelProto model;
        try
        {
            model = ModelProto.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new InvalidDataException($"'{path}' is not an ONNX model: it does not parse as an ONNX ModelProto ({e.Message}). The file is corrupt or of another format.", e);
        }
        if (model.Graph is null || model.Graph.Node.Count == 0 || model.OpsetImport.Count == 0)
            throw new InvalidDataException($"'{path}' is not an ONNX model: it holds no graph or no opset ({bytes.Length} bytes). The file is corrupt or of another format.");
        var kind = model.MetadataProps.LastOrDefault(p => p.Key == OnnxMetadata.Kind)?.Value;
        if (kind is null || !OnnxMetadata.Kinds.Contains(kind))
            throw new InvalidDataException(
                $"'{path}' is an ONNX model but not one exported by Microsoft.ML.Diffusion (producer '{model.ProducerName}', graph '{model.Graph.Name}'; " +
                $"its metadata has {(kind is null ? $"no '{OnnxMetadata.Kind}'" : $"{OnnxMetadata.Kind} = '{kind}'")}, expected one of " +
                $"{string.Join(", ", OnnxMetadata.Kinds)}). Export it with DiffusionModel.ExportOnnx, AutoencoderModel.ExportEncoderOnnx / ExportDecoderOnnx " +
                "or NoisyClassifierModel.ExportOnnx.");
        if (expectedKind is not null && kind != expectedKind)
            throw new InvalidDataException($"'{path}' holds a {kind} network; expected a {expectedKind}.");
        try
        {
            using var session = new InferenceSession(bytes);
        }
        catch (OnnxRuntimeException e)
        {
            throw new InvalidDataException($"'{path}' is damaged: ONNX Runtime cannot load it ({e.Message}).", e);
        }
        return new OnnxModelFile(path, bytes, model);
    }

    /// <summary>A new ONNX Runtime session on the file's model.</summary>
    public InferenceSession CreateSession(SessionOptions? options = null) =>
        options is null ? new InferenceSession(Bytes) : new InferenceSession(Bytes, options);

    /// <summary>Writes <paramref name="model"/> to <paramref name="path"/> through a temporary file next to it, so a failed export
    /// leaves no partial .onnx file.</summary>
    public static void Write(string path, Action<Stream> model) => Common.AtomicFile.Write(path, model);
}
