using Google.Protobuf;
using Microsoft.ML.Diffusion.Models;
using Onnx;
using static Microsoft.ML.Diffusion.Onnx.OnnxGraphBuilder;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Onnx;

/// <summary>
/// Writes a <see cref="UNet"/> as a standard ONNX graph (opset <see cref="OnnxGraphBuilder.Opset"/>) that computes exactly
/// what the network computes in eval mode on the input the sampling loop assembles. Inputs: <c>x_t</c> float32
/// [B, C, S, S] (C, S: the grid the network denoises, latents for a latent model); <c>t</c> float32 [B] (timesteps in 0..T-1,
/// fractional ones included: the sinusoidal embedding works on real t); for a class-conditional network <c>class_labels</c>
/// int64 [B] (0..NumClasses, NumClasses being the null label); for a self-conditioned one <c>self_condition</c> float32
/// [B, C, S, S] (the previous step's x_0 estimate clamped to [-1, 1], zeros at the first step; Analog Bits, algorithm 2); for a
/// super-resolution one <c>low_resolution</c> float32 [B, Channels, S/f, S/f] (the low-resolution image in [-1, 1], upsampled
/// inside the graph by bicubic interpolation and clamped, as <see cref="Conditions.LowResolutionCondition.Upsample"/> does).
/// The network reads concat(x_t, self_condition, upsample(low_resolution)) along the channels, as
/// <see cref="Conditions.ConditionedNetwork"/> and <see cref="Conditions.SelfConditioning"/> assemble it. Output
/// <c>prediction</c> float32 [B, OutChannels, S, S] (2 C channels with learned variance, as the network returns them). The
/// weights are initializers named after the network's parameters.
/// </summary>
internal sealed class UNetOnnxExporter : OnnxNetworkWriter
{
    /// <summary>The metadata_props key holding the model's <see cref="DiffusionModelConfig"/> as JSON.</summary>
    public const string ConfigKey = "diffusion_model_config";

    /// <summary>Graph input names.</summary>
    public const string SampleInput = "x_t", TimestepInput = "t", ClassLabelInput = "class_labels",
        SelfConditionInput = "self_condition", LowResolutionInput = "low_resolution";

    /// <summary>The graph output name.</summary>
    public const string PredictionOutput = "prediction";

    private readonly UNetConfig _net;
    private readonly DiffusionModelConfig _config;

    private UNetOnnxExporter(DiffusionModelConfig config, Dictionary<string, Tensor> weights) : base(weights, "unet", "U-Net")
    {
        _config = config;
        _net = config.Network;
    }

    /// <summary>Writes <paramref name="network"/> as ONNX to <paramref name="stream"/>, with <paramref name="config"/> as JSON
    /// in the metadata (and the schedule, T, prediction type, image format, conditioning and latent space as separate keys).</summary>
    public static void Export(UNet network, DiffusionModelConfig config, Stream stream)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(stream);
        Build(network, config).WriteTo(stream);
    }

    /// <summary>Builds the ONNX model of <paramref name="network"/> with <paramref name="config"/> in its metadata.</summary>
    /// <exception cref="InvalidOperationException">The network's input channels do not match the config's inputs.</exception>
    public static ModelProto Build(UNet network, DiffusionModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(config);
        if (!network.Config.Equals(config.Network))
            throw new ArgumentException("The config describes another network than the one given.", nameof(config));
        int expected = config.SampleChannels * (config.SelfConditioning ? 2 : 1) + (config.Conditioning?.ExtraChannels(config.Channels) ?? 0);
        if (network.Config.InChannels != expected)
            throw new InvalidOperationException(
                $"The U-Net has {network.Config.InChannels} input channels; x_t ({config.SampleChannels})" +
                (config.SelfConditioning ? $", self_condition ({config.SampleChannels})" : "") +
                (config.Conditioning is { } c ? $", low_resolution ({c.ExtraChannels(config.Channels)})" : "") + $" make {expected}.");
        using var scope = NewDisposeScope();
        var weights = network.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value);
        var exporter = new UNetOnnxExporter(config, weights);
        exporter.BuildGraph();
        var inputs = "x_t, t" + (config.Network.NumClasses > 0 ? ", class_labels" : "") + (config.SelfConditioning ? ", self_condition" : "") +
                     (config.Conditioning is not null ? ", low_resolution" : "");
        return exporter.Finish(Metadata(config), $"Diffusion U-Net: prediction = network({inputs}); t is float32 (continuous timesteps allowed).");
    }

    /// <summary>The metadata_props of the U-Net of <paramref name="config"/>.</summary>
    private static Dictionary<string, string> Metadata(DiffusionModelConfig config)
    {
        var m = new Dictionary<string, string>
        {
            [OnnxMetadata.Kind] = OnnxMetadata.DiffusionUNet,
            [ConfigKey] = config.ToJson(),
            ["schedule"] = config.Schedule.ToString(),
            ["timesteps"] = OnnxMetadata.Text(config.Timesteps),
            [OnnxMetadata.TimestepType] = OnnxMetadata.TimestepFloat,
            ["prediction_type"] = config.Prediction.ToString(),
            ["variance_type"] = config.Variance.ToString(),
            ["image_size"] = OnnxMetadata.Text(config.ImageSize),
            ["channels"] = OnnxMetadata.Text(config.Channels),
            ["sample_size"] = OnnxMetadata.Text(config.SampleSize),
            ["sample_channels"] = OnnxMetadata.Text(config.SampleChannels),
            ["num_classes"] = OnnxMetadata.Text(config.Network.NumClasses),
            ["self_conditioning"] = OnnxMetadata.Text(config.SelfConditioning),
        };
        if (config.Conditioning is { } c)
        {
            m["conditioning"] = c.ToString();
            m["low_resolution_size"] = OnnxMetadata.Text(c.LowResolutionSize(config.ImageSize));
        }
        if (config.Latent is { } latent)
        {
            // LDM: the network denoises z = s E(x); images are D(z / s) (the autoencoder's decoder, exported on its own).
            m["latent_downsampling_factor"] = OnnxMetadata.Text(latent.DownsamplingFactor);
            m["latent_channels"] = OnnxMetadata.Text(latent.LatentChannels);
            m["latent_scale_factor"] = OnnxMetadata.Text(latent.ScaleFactor);
        }
        return m;
    }

    private void BuildGraph()
    {
        int s = _net.ImageSize, b = _net.BaseChannels, groups = _net.GroupNormGroups, heads = _net.AttentionHeads;
        int sampleChannels = _config.SampleChannels;
        string x = G.Input(SampleInput, TensorProto.Types.DataType.Float, sampleChannels, s, s);
        string t = G.Input(TimestepInput, TensorProto.Types.DataType.Float);

        var temb = TimeEmbedding("time_embedding", t, b);
        if (_net.NumClasses > 0)
        {
            // guided-diffusion: emb = emb + label_emb(y), the embedding row being a Gather of the class index.
            string y = G.Input(ClassLabelInput, TensorProto.Types.DataType.Int64);
            var row = G.Node("Gather", "class_embedding", new[] { W("class_embedding.weight"), y }, Attr("axis", 0L));
            temb = G.Node("Add", "temb", new[] { temb, row });
        }

        // The network input: concat(x_t, x0_hat, upsample(low_res)) along the channels (SelfConditioning.Input, then
        // ConditionedNetwork.AppendChannels).
        var parts = new List<string> { x };
        if (_config.SelfConditioning)
            parts.Add(G.Input(SelfConditionInput, TensorProto.Types.DataType.Float, sampleChannels, s, s));
        if (_config.Conditioning is { } c)
        {
            int small = c.LowResolutionSize(_config.ImageSize);
            string low = G.Input(LowResolutionInput, TensorProto.Types.DataType.Float, _config.Channels, small, small);
            parts.Add(BicubicUpsample(low, c.Factor));
        }
        string input = parts.Count == 1 ? x : G.Node("Concat", "network_input", parts.ToArray(), Attr("axis", 1L));

        var (h, skips) = EncoderHalf(input, temb, _net.ChannelMultipliers, _net.NumResBlocks, groups, heads);
        int index = 0, levels = _net.ChannelMultipliers.Length;

        // Up path: each stage reads concat(h, skip) along the channels.
        for (int level = levels - 1; level >= 0; level--)
        {
            for (int i = 0; i < _net.NumResBlocks + 1; i++)
            {
                h = G.Node("Concat", "skip_concat", new[] { h, skips.Pop() }, Attr("axis", 1L));
                h = Stage($"up.{index++}.stage", h, temb, groups, heads);
            }
            if (level > 0) h = UpsampleConv($"up.{index++}.conv", h);
        }
        if (skips.Count != 0) throw new InvalidOperationException("The U-Net walk left skips unused; the exporter lags the architecture.");

        // Output: GroupNorm -> SiLU -> conv3x3.
        h = Conv("output_conv", Silu(GroupNorm("output_norm", h, groups)));
        G.Output(h, PredictionOutput, _net.OutChannels, s, s);
    }

    /// <summary>
    /// <see cref="Conditions.LowResolutionCondition.Upsample"/>: bicubic interpolation by <paramref name="factor"/> with Keys' cubic
    /// convolution a = -0.75 and half-pixel coordinates (torch's interpolate, mode bicubic, align_corners false; the border taps
    /// clamped to the edge), then clamped to [-1, 1].
    /// </summary>
    private string BicubicUpsample(string low, int factor)
    {
        var up = G.Node("Resize", "low_resolution_upsampled",
            new[] { low, "", G.FloatConstant("scales_condition", new float[] { 1, 1, factor, factor }, 4) },
            Attr("mode", "cubic"), Attr("cubic_coeff_a", -0.75f), Attr("coordinate_transformation_mode", "half_pixel"), Attr("exclude_outside", 0L));
        return G.Node("Clip", "low_resolution_condition", new[] { up, G.FloatConstant("minus_one", new[] { -1f }), G.FloatConstant("one", new[] { 1f }) });
    }
}
