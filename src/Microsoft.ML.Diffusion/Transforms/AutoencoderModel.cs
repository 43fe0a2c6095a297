using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Transforms;

[assembly: LoadableClass(typeof(AutoencoderModel), null, typeof(SignatureLoadModel),
    "Autoencoder Model", AutoencoderModel.LoaderSignature)]

namespace Microsoft.ML.Diffusion;

/// <summary>
/// A trained KL autoencoder (<see cref="AutoencoderTrainer"/>): <see cref="Encode(Tensor)"/> maps images to the posterior mean
/// of their latents, <see cref="Decode(Tensor)"/> maps latents back to images, and <see cref="Transform"/> adds a column of
/// reconstructed images (Decode(Encode(x))). Saved and loaded with mlContext.Model, weights included.
/// </summary>
public sealed class AutoencoderModel : ITransformer, ICanSaveModel, IDisposable, IImageBatchMapper<ImageRequest>, ILatentCodec
{
    internal const string LoaderSignature = "DiffusionAutoencoder";
    private const int InternalBatch = 64;
    private readonly IHost _host;
    private readonly KlAutoencoder _network;
    private readonly Device _device;
    private readonly object _onnxLock = new();
    private Onnx.OnnxRuntimeDecoder? _onnxDecoder;          // made on first ONNX Runtime decode (a latent model's InferenceEngine.OnnxRuntime)
    private bool _disposed;

    internal AutoencoderModel(IHostEnvironment env, AutoencoderModelConfig config, KlAutoencoder network, Device device)
    {
        _host = env.Register(nameof(AutoencoderModel));
        Config = config;
        _network = network;
        _device = device;
        _network.to(device);
        _network.eval();
    }

    /// <summary>The network, columns and training facts of this model.</summary>
    public AutoencoderModelConfig Config { get; }

    /// <summary>Image side in pixels.</summary>
    public int ImageSize => Config.Network.ImageSize;

    /// <summary>1 (grayscale) or 3 (RGB).</summary>
    public int Channels => Config.Network.Channels;

    /// <summary>The downsampling factor f: latents are <see cref="LatentChannels"/> x ImageSize/f x ImageSize/f.</summary>
    public int DownsamplingFactor => Config.Network.DownsamplingFactor;

    /// <summary>Channels of the latent.</summary>
    public int LatentChannels => Config.Network.LatentChannels;

    /// <summary>Side of the latent grid: ImageSize / DownsamplingFactor.</summary>
    public int LatentSize => Config.Network.LatentSize;

    /// <summary>The network's parameter count.</summary>
    public long ParameterCount => _network.ParameterCount;

    /// <summary>The column of reconstructed images <see cref="Transform"/> adds.</summary>
    public string OutputColumnName => Config.OutputColumnName;

    /// <summary>The image column <see cref="Transform"/> reads.</summary>
    public string InputColumnName => Config.InputColumnName;

    /// <summary>
    /// The posterior means of the latents of <paramref name="images"/> [N, C, S, S] (float, [-1, 1], any device) as
    /// [N, LatentChannels, S/f, S/f] on the CPU.
    /// </summary>
    public Tensor Encode(Tensor images) => EncodeDistribution(images).Mean;

    /// <summary>The posterior means of the latents of <paramref name="images"/> (converted to this model's channels).</summary>
    public Tensor Encode(IReadOnlyList<MLImage> images)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.Count == 0) throw new ArgumentException("No images.", nameof(images));
        for (int i = 0; i < images.Count; i++)
        {
            if (images[i] is null) throw new ArgumentNullException(nameof(images), $"Image {i} is null.");
            if (images[i].Width != ImageSize || images[i].Height != ImageSize)
                throw new ArgumentException(
                    $"Image {i} is {images[i].Width}x{images[i].Height}; this autoencoder encodes {ImageSize}x{ImageSize} images (resize them with ResizeImages).", nameof(images));
        }
        using var x = ImageTensorConverter.ToTensor(images, Channels);
        return Encode(x);
    }

    /// <summary>The posterior q(z | x) of <paramref name="images"/>: mean and log-variance, [N, LatentChannels, S/f, S/f] on the CPU.</summary>
    public (Tensor Mean, Tensor LogVar) EncodeDistribution(Tensor images)
    {
        ArgumentNullException.ThrowIfNull(images);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var expected = new long[] { Channels, ImageSize, ImageSize };
        if (images.dim() != 4 || !images.shape.Skip(1).SequenceEqual(expected))
            throw new ArgumentException(
                $"The images have shape [{string.Join(", ", images.shape)}]; this autoencoder expects [N, {Channels}, {ImageSize}, {ImageSize}] " +
                $"(Channels = {Channels}, ImageSize = {ImageSize}, divisible by the factor {DownsamplingFactor}).", nameof(images));
        var means = new List<Tensor>();
        var logVars = new List<Tensor>();
        try
        {
            using var _ = no_grad();
            for (long start = 0; start < images.shape[0]; start += InternalBatch)
            {
                using var scope = NewDisposeScope();
                var chunk = images.narrow(0, start, Math.Min(InternalBatch, images.shape[0] - start)).to_type(float32).to(_device);
                var (mean, logVar) = _network.Encode(chunk);
                means.Add(mean.cpu().MoveToOuterDisposeScope());
                logVars.Add(logVar.cpu().MoveToOuterDisposeScope());
            }
            return (cat(means, 0), cat(logVars, 0));
        }
        finally
        {
            foreach (var t in means.Concat(logVars)) t.Dispose();
        }
    }

    /// <summary>Decodes latents [N, LatentChannels, S/f, S/f] (any device) to images [N, C, S, S] on the CPU (not clamped).</summary>
    public Tensor Decode(Tensor latents)
    {
        ArgumentNullException.ThrowIfNull(latents);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var expected = new long[] { LatentChannels, LatentSize, LatentSize };
        if (latents.dim() != 4 || !latents.shape.Skip(1).SequenceEqual(expected))
            throw new ArgumentException(
                $"The latents have shape [{string.Join(", ", latents.shape)}]; this autoencoder decodes [N, {LatentChannels}, {LatentSize}, {LatentSize}].", nameof(latents));
        var parts = new List<Tensor>();
        try
        {
            using var _ = no_grad();
            for (long start = 0; start < latents.shape[0]; start += InternalBatch)
            {
                using var scope = NewDisposeScope();
                var chunk = latents.narrow(0, start, Math.Min(InternalBatch, latents.shape[0] - start)).to_type(float32).to(_device);
                parts.Add(_network.Decode(chunk).cpu().MoveToOuterDisposeScope());
            }
            return cat(parts, 0);
        }
        finally
        {
            foreach (var t in parts) t.Dispose();
        }
    }

    /// <inheritdoc/>
    Tensor ILatentCodec.Decode(Tensor latents, InferenceEngine engine) => Decode(latents, engine);

    /// <summary>Decodes latents [N, LatentChannels, S/f, S/f] to images [N, C, S, S] on the CPU (not clamped) with
    /// <paramref name="engine"/>: <see cref="InferenceEngine.OnnxRuntime"/> runs the exported decoder
    /// (<see cref="ExportDecoderOnnx(Stream)"/>) in a session made on first use and reused.</summary>
    internal Tensor Decode(Tensor latents, InferenceEngine engine)
    {
        if (engine != InferenceEngine.OnnxRuntime) return Decode(latents);
        ArgumentNullException.ThrowIfNull(latents);
        var expected = new long[] { LatentChannels, LatentSize, LatentSize };
        if (latents.dim() != 4 || !latents.shape.Skip(1).SequenceEqual(expected))
            throw new ArgumentException(
                $"The latents have shape [{string.Join(", ", latents.shape)}]; this autoencoder decodes [N, {LatentChannels}, {LatentSize}, {LatentSize}].", nameof(latents));
        Onnx.OnnxRuntimeDecoder decoder;
        lock (_onnxLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_onnxDecoder is null)
            {
                using var stream = new MemoryStream();
                Onnx.AutoencoderOnnxExporter.Export(_network, Config, Onnx.AutoencoderPart.Decoder, stream);
                _onnxDecoder = new Onnx.OnnxRuntimeDecoder(stream.ToArray(), Config.Network, _host);
            }
            decoder = _onnxDecoder;
        }
        var parts = new List<Tensor>();
        try
        {
            for (long start = 0; start < latents.shape[0]; start += InternalBatch)
            {
                using var chunk = latents.narrow(0, start, Math.Min(InternalBatch, latents.shape[0] - start));
                parts.Add(decoder.Decode(chunk));
            }
            return parts.Count == 1 ? parts[0] : cat(parts, 0);
        }
        finally
        {
            if (parts.Count > 1) foreach (var t in parts) t.Dispose();
        }
    }

    /// <summary>True once <see cref="Decode(Tensor, InferenceEngine)"/> has opened the decoder's ONNX Runtime session.</summary>
    internal bool OnnxDecoderOpened
    {
        get
        {
            lock (_onnxLock) return _onnxDecoder is not null;
        }
    }

    /// <summary>Decodes latents to images (values clamped to the pixel range).</summary>
    public IReadOnlyList<MLImage> DecodeImages(Tensor latents)
    {
        using var images = Decode(latents);
        return ImageTensorConverter.ToImages(images);
    }

    /// <summary>Decode(Encode(x)) through the posterior mean: [N, C, S, S] on the CPU.</summary>
    public Tensor Reconstruct(Tensor images)
    {
        using var z = Encode(images);
        return Decode(z);
    }

    // ---- IImageBatchMapper ----

    int IImageBatchMapper<ImageRequest>.OutputSize => ImageSize;

    int IBatchRowMapper<ImageRequest, byte[]>.BatchSize => 16;

    private string Why => $"the autoencoder's image size (ImageSize {ImageSize}, factor {DownsamplingFactor})";

    IReadOnlyList<DataViewSchema.Column> IBatchRowMapper<ImageRequest, byte[]>.CheckInput(DataViewSchema inputSchema) =>
        new[] { ImageMappingColumns.CheckImage(inputSchema, InputColumnName, ImageSize, Why) };

    Func<long, ImageRequest> IBatchRowMapper<ImageRequest, byte[]>.CreateReader(DataViewRow row)
        => ImageMappingColumns.RequestReader(row, row.Schema[InputColumnName], ImageSize, Channels, Why);

    byte[][] IBatchRowMapper<ImageRequest, byte[]>.MapBatch(IReadOnlyList<ImageRequest> requests)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var x = ImageRequest.Images(requests, Channels, ImageSize);
        using var result = Reconstruct(x);
        return ImageTensorConverter.ToBgraPixels(result);
    }

    // ---- ITransformer ----

    /// <summary>Always true: each row is mapped on its own (a PredictionEngine works).</summary>
    public bool IsRowToRowMapper => true;

    /// <summary>The input schema plus the reconstruction column; throws, naming the column and both sizes, for a wrongly sized input.</summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        ((IImageBatchMapper<ImageRequest>)this).CheckInput(inputSchema);
        return ImageMapping.OutputSchema(inputSchema, OutputColumnName, ImageSize);
    }

    /// <summary>Lazily adds the reconstructed images Decode(Encode(image)).</summary>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new BatchMappingDataView<ImageRequest, byte[]>(this, input, GetOutputSchema(input.Schema));
    }

    /// <summary>A row-to-row mapper for PredictionEngine.</summary>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return new BatchMappingRowMapper<ImageRequest, byte[]>(this, inputSchema, GetOutputSchema(inputSchema));
    }

    // ---- ONNX export ----

    /// <summary>Writes the encoder as a standard ONNX model to <paramref name="path"/> (through a temporary file); see
    /// <see cref="ExportEncoderOnnx(Stream)"/>.</summary>
    /// <param name="path">The .onnx file to create or overwrite.</param>
    public void ExportEncoderOnnx(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Onnx.OnnxModelFile.Write(path, ExportEncoderOnnx);
    }

    /// <summary>
    /// Writes the encoder as a standard ONNX model (opset 17, dynamic batch dimension, weights as initializers) to
    /// <paramref name="stream"/>. Input: <c>image</c> float32 [B, Channels, ImageSize, ImageSize] in [-1, 1]. Outputs: <c>mean</c>
    /// and <c>log_variance</c> float32 [B, LatentChannels, LatentSize, LatentSize], the posterior q(z | x) that
    /// <see cref="EncodeDistribution"/> returns (<see cref="Encode(Tensor)"/> is the mean; log-variance clamped to [-30, 20]). The
    /// metadata holds <see cref="Config"/> as JSON under <c>autoencoder_config</c>, <c>model_kind</c> = <c>autoencoder_encoder</c>,
    /// and the image size, channels, latent channels, latent size and downsampling factor under their own keys. A latent
    /// diffusion model works on z = s * mean, s being its <see cref="LatentSpace.ScaleFactor"/>.
    /// </summary>
    /// <param name="stream">A writable stream; it is left open.</param>
    public void ExportEncoderOnnx(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Onnx.AutoencoderOnnxExporter.Export(_network, Config, Onnx.AutoencoderPart.Encoder, stream);
    }

    /// <summary>Writes the decoder as a standard ONNX model to <paramref name="path"/> (through a temporary file); see
    /// <see cref="ExportDecoderOnnx(Stream)"/>.</summary>
    /// <param name="path">The .onnx file to create or overwrite.</param>
    public void ExportDecoderOnnx(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Onnx.OnnxModelFile.Write(path, ExportDecoderOnnx);
    }

    /// <summary>
    /// Writes the decoder as a standard ONNX model (opset 17, dynamic batch dimension, weights as initializers) to
    /// <paramref name="stream"/>. Input: <c>latent</c> float32 [B, LatentChannels, LatentSize, LatentSize]. Output: <c>image</c>
    /// float32 [B, Channels, ImageSize, ImageSize], what <see cref="Decode(Tensor)"/> returns (not clamped: clamp to [-1, 1]). The
    /// metadata is the encoder's (<see cref="ExportEncoderOnnx(Stream)"/>) with <c>model_kind</c> = <c>autoencoder_decoder</c>.
    /// For a latent diffusion model's samples z, the images are decoder(z / s), s being its <see cref="LatentSpace.ScaleFactor"/>
    /// (also in the diffusion model's ONNX metadata as <c>latent_scale_factor</c>).
    /// </summary>
    /// <param name="stream">A writable stream; it is left open.</param>
    public void ExportDecoderOnnx(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Onnx.AutoencoderOnnxExporter.Export(_network, Config, Onnx.AutoencoderPart.Decoder, stream);
    }

    // ---- persistence ----

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        AutoencoderFormat.Save(ctx, Config, _network);
    }

    private static AutoencoderModel Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        var (config, network) = AutoencoderFormat.Load(ctx);
        return new AutoencoderModel(env, config, network, DeviceSelection.Select(env));
    }

    /// <summary>Frees the network's native memory and its ONNX Runtime session, if one was made.</summary>
    public void Dispose()
    {
        lock (_onnxLock)
        {
            if (_disposed) return;
            _disposed = true;
            _onnxDecoder?.Dispose();
        }
        _network.Dispose();
    }
}
