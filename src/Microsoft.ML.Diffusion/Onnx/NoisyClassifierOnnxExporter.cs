using Google.Protobuf;
using Microsoft.ML.Diffusion.Models;
using Onnx;
using static Microsoft.ML.Diffusion.Onnx.OnnxGraphBuilder;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Onnx;

/// <summary>
/// Writes a <see cref="NoisyClassifierNetwork"/> as a standard ONNX graph that computes what its forward computes in eval mode:
/// the U-Net's encoder half (time embedding, input convolution, down stages, middle block) and the pooling head
/// GroupNorm -> SiLU -> global average pool -> linear (Dhariwal &amp; Nichol 2021). Inputs: <c>x_t</c> float32 [B, C, S, S]
/// (noisy images in the [-1, 1] scale), <c>t</c> float32 [B] (timesteps 0..T-1; 0 for clean images). Output: <c>logits</c>
/// float32 [B, NumClasses] (log p(y | x_t, t) is their log-softmax).
/// </summary>
internal sealed class NoisyClassifierOnnxExporter : OnnxNetworkWriter
{
    /// <summary>The metadata_props key holding the model's <see cref="NoisyClassifierModelConfig"/> as JSON.</summary>
    public const string ConfigKey = "noisy_classifier_config";

    /// <summary>The graph output name.</summary>
    public const string LogitsOutput = "logits";

    private readonly NoisyClassifierConfig _net;

    private NoisyClassifierOnnxExporter(NoisyClassifierConfig net, Dictionary<string, Tensor> weights) : base(weights, "noisy_classifier", "noisy classifier") =>
        _net = net;

    /// <summary>Writes <paramref name="network"/> as ONNX to <paramref name="stream"/> with <paramref name="config"/> in the metadata.</summary>
    public static void Export(NoisyClassifierNetwork network, NoisyClassifierModelConfig config, Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        Build(network, config).WriteTo(stream);
    }

    /// <summary>Builds the ONNX model of <paramref name="network"/> with <paramref name="config"/> in its metadata.</summary>
    public static ModelProto Build(NoisyClassifierNetwork network, NoisyClassifierModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(config);
        using var scope = NewDisposeScope();
        var exporter = new NoisyClassifierOnnxExporter(network.Config, network.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value));
        exporter.BuildGraph();
        var metadata = new Dictionary<string, string>
        {
            [OnnxMetadata.Kind] = OnnxMetadata.NoisyClassifier,
            [ConfigKey] = config.ToJson(),
            ["schedule"] = config.Schedule.ToString(),
            ["timesteps"] = OnnxMetadata.Text(config.Timesteps),
            [OnnxMetadata.TimestepType] = OnnxMetadata.TimestepFloat,
            ["image_size"] = OnnxMetadata.Text(network.Config.ImageSize),
            ["channels"] = OnnxMetadata.Text(network.Config.InChannels),
            ["num_classes"] = OnnxMetadata.Text(network.Config.NumClasses),
        };
        return exporter.Finish(metadata, "Noisy classifier: logits = classifier(x_t, t); log p(y | x_t, t) = log_softmax(logits).");
    }

    private void BuildGraph()
    {
        int s = _net.ImageSize;
        string x = G.Input(UNetOnnxExporter.SampleInput, TensorProto.Types.DataType.Float, _net.InChannels, s, s);
        string t = G.Input(UNetOnnxExporter.TimestepInput, TensorProto.Types.DataType.Float);
        var temb = TimeEmbedding("time_embedding", t, _net.BaseChannels);
        var (h, _) = EncoderHalf(x, temb, _net.ChannelMultipliers, _net.NumResBlocks, _net.GroupNormGroups, _net.AttentionHeads);
        // Pooling head: GroupNorm -> SiLU -> mean over H, W -> linear.
        h = Silu(GroupNorm("output_norm", h, _net.GroupNormGroups));
        h = G.Node("ReduceMean", "pooled", new[] { h }, Attr("axes", new long[] { 2, 3 }), Attr("keepdims", 0L));
        G.Output(Linear("head", h), LogitsOutput, _net.NumClasses);
    }
}
