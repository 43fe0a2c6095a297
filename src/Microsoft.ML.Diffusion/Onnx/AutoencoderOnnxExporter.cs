using Google.Protobuf;
using Microsoft.ML.Diffusion.Models;
using Onnx;
using static Microsoft.ML.Diffusion.Onnx.OnnxGraphBuilder;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Onnx;

/// <summary>The part of a <see cref="KlAutoencoder"/> an ONNX file holds.</summary>
internal enum AutoencoderPart
{
    /// <summary><c>image</c> [B, C, S, S] -> <c>mean</c>, <c>log_variance</c> [B, Z, S/f, S/f] (<see cref="KlAutoencoder.Encode"/>).</summary>
    Encoder,

    /// <summary><c>latent</c> [B, Z, S/f, S/f] -> <c>image</c> [B, C, S, S] (<see cref="KlAutoencoder.Decode"/>, not clamped).</summary>
    Decoder,
}

/// <summary>
/// Writes the encoder or the decoder of a <see cref="KlAutoencoder"/> (Rombach et al. 2022, appendix G) as a standard ONNX graph
/// that computes what <see cref="KlAutoencoder.Encode"/> or <see cref="KlAutoencoder.Decode"/> computes: the encoder maps images
/// in [-1, 1] to the mean and log-variance (clamped to [-30, 20]) of the posterior q(z | x); the decoder maps latents to
/// images (not clamped). The weights keep their names in the autoencoder's state_dict.
/// </summary>
internal sealed class AutoencoderOnnxExporter : OnnxNetworkWriter
{
    /// <summary>The metadata_props key holding the model's <see cref="AutoencoderModelConfig"/> as JSON.</summary>
    public const string ConfigKey = "autoencoder_config";

    /// <summary>Graph input and output names.</summary>
    public const string ImageName = "image", MeanOutput = "mean", LogVarianceOutput = "log_variance", LatentInput = "latent";

    private readonly AutoencoderConfig _net;

    private AutoencoderOnnxExporter(AutoencoderConfig net, Dictionary<string, Tensor> weights, AutoencoderPart part)
        : base(weights, part == AutoencoderPart.Encoder ? "autoencoder_encoder" : "autoencoder_decoder", "autoencoder") => _net = net;

    /// <summary>Writes <paramref name="part"/> of <paramref name="network"/> as ONNX to <paramref name="stream"/>.</summary>
    public static void Export(KlAutoencoder network, AutoencoderModelConfig config, AutoencoderPart part, Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        Build(network, config, part).WriteTo(stream);
    }

    /// <summary>Builds the ONNX model of <paramref name="part"/> of <paramref name="network"/>, <paramref name="config"/> in its metadata.</summary>
    public static ModelProto Build(KlAutoencoder network, AutoencoderModelConfig config, AutoencoderPart part)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(config);
        if (!Enum.IsDefined(part)) throw new ArgumentOutOfRangeException(nameof(part), part, "Expected Encoder or Decoder.");
        using var scope = NewDisposeScope();
        var exporter = new AutoencoderOnnxExporter(network.Config, network.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value), part);
        var c = network.Config;
        var metadata = new Dictionary<string, string>
        {
            [OnnxMetadata.Kind] = part == AutoencoderPart.Encoder ? OnnxMetadata.AutoencoderEncoder : OnnxMetadata.AutoencoderDecoder,
            [ConfigKey] = config.ToJson(),
            ["image_size"] = OnnxMetadata.Text(c.ImageSize),
            ["channels"] = OnnxMetadata.Text(c.Channels),
            ["latent_channels"] = OnnxMetadata.Text(c.LatentChannels),
            ["latent_size"] = OnnxMetadata.Text(c.LatentSize),
            ["downsampling_factor"] = OnnxMetadata.Text(c.DownsamplingFactor),
        };
        if (part == AutoencoderPart.Encoder)
        {
            exporter.BuildEncoder();
            return exporter.Finish(metadata, "KL autoencoder encoder: (mean, log_variance) of q(z | image), image in [-1, 1].",
                "encoder.", "quant_conv.");
        }
        exporter.BuildDecoder();
        return exporter.Finish(metadata, "KL autoencoder decoder: image = decoder(latent), not clamped.", "decoder.", "post_quant_conv.");
    }

    /// <summary>conv_in, per level NumResBlocks residual blocks and a stride-2 convolution between levels, two middle blocks,
    /// GroupNorm -> SiLU -> conv_out, then quant_conv; the moments split into mean and log-variance (clamped to [-30, 20], as
    /// diffusers' DiagonalGaussianDistribution).</summary>
    private void BuildEncoder()
    {
        int s = _net.ImageSize, g = _net.GroupNormGroups, z = _net.LatentChannels;
        string x = G.Input(ImageName, TensorProto.Types.DataType.Float, _net.Channels, s, s);
        var h = Conv("encoder.conv_in", x);
        int index = 0;
        for (int level = 0; level < _net.ChannelMultipliers.Length; level++)
        {
            for (int r = 0; r < _net.NumResBlocks; r++)
                h = PlainResBlock($"encoder.down.{index++}", h, g);
            if (level < _net.ChannelMultipliers.Length - 1)
                h = Conv($"encoder.down.{index++}", h, stride: 2);
        }
        h = PlainResBlock("encoder.mid2", PlainResBlock("encoder.mid1", h, g), g);
        h = Conv("encoder.conv_out", Silu(GroupNorm("encoder.norm_out", h, g)));
        var moments = Conv("quant_conv", h);                                                          // [B, 2Z, s, s]
        var mean = G.Node("Slice", "moments_mean", new[]
        {
            moments, G.Int64Constant("slice_mean_start", new long[] { 0 }), G.Int64Constant("slice_mean_end", new long[] { z }), G.Int64Constant("axes_channel", new long[] { 1 }),
        });
        var logVar = G.Node("Slice", "moments_log_variance", new[]
        {
            moments, G.Int64Constant("slice_var_start", new long[] { z }), G.Int64Constant("slice_var_end", new long[] { 2L * z }), G.Int64Constant("axes_channel", new long[] { 1 }),
        });
        logVar = G.Node("Clip", "log_variance_clamped", new[] { logVar, G.FloatConstant("log_variance_min", new[] { -30f }), G.FloatConstant("log_variance_max", new[] { 20f }) });
        int latent = _net.LatentSize;
        G.Output(mean, MeanOutput, z, latent, latent);
        G.Output(logVar, LogVarianceOutput, z, latent, latent);
    }

    /// <summary>post_quant_conv, conv_in, two middle blocks, per level (deepest first) NumResBlocks + 1 residual blocks and a
    /// nearest 2x upsampling with a 3x3 convolution between levels, GroupNorm -> SiLU -> conv_out.</summary>
    private void BuildDecoder()
    {
        int latent = _net.LatentSize, g = _net.GroupNormGroups;
        string z = G.Input(LatentInput, TensorProto.Types.DataType.Float, _net.LatentChannels, latent, latent);
        var h = Conv("decoder.conv_in", Conv("post_quant_conv", z));
        h = PlainResBlock("decoder.mid2", PlainResBlock("decoder.mid1", h, g), g);
        int index = 0;
        for (int level = _net.ChannelMultipliers.Length - 1; level >= 0; level--)
        {
            for (int r = 0; r < _net.NumResBlocks + 1; r++)
                h = PlainResBlock($"decoder.up.{index++}", h, g);
            if (level > 0) h = UpsampleConv($"decoder.up.{index++}.conv", h);
        }
        h = Conv("decoder.conv_out", Silu(GroupNorm("decoder.norm_out", h, g)));
        G.Output(h, ImageName, _net.Channels, _net.ImageSize, _net.ImageSize);
    }
}
