using Google.Protobuf;
using Microsoft.ML.Diffusion.Models;
using Onnx;
using TorchSharp;
using static Microsoft.ML.Diffusion.Onnx.OnnxGraphBuilder;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Onnx;

/// <summary>
/// Writes a <see cref="UNet"/> as a standard ONNX graph (opset <see cref="OnnxGraphBuilder.Opset"/>) that computes exactly
/// what <see cref="UNet.forward(Tensor, Tensor, Tensor?)"/> computes in eval mode. Inputs: <c>x_t</c> float32
/// [B, C, S, S], <c>t</c> int64 [B] and, for a class-conditional network, <c>class_labels</c> int64 [B] (0..NumClasses,
/// NumClasses being the null label); output <c>prediction</c> float32 [B, OutChannels, S, S] (2 C channels with learned
/// variance, as the network returns them). The weights are initializers named after the network's parameters.
/// </summary>
/// <remarks>
/// The graph walks the architecture the way <see cref="UNet"/>'s constructor builds it and takes each weight from the
/// network's state_dict by name, so a parameter missing from the walk (an architecture change not mirrored here) fails
/// the export instead of silently producing a different network. Channel-padded and sub-pixel convolutions
/// (<see cref="PaddedConv2d"/>, <see cref="NearestUpsampleConv"/>) are written as the plain convolutions they equal.
/// </remarks>
internal sealed class UNetOnnxExporter
{
    /// <summary>The metadata_props key holding the model's <see cref="DiffusionModelConfig"/> as JSON.</summary>
    public const string ConfigKey = "diffusion_model_config";

    /// <summary>Graph input names.</summary>
    public const string SampleInput = "x_t", TimestepInput = "t", ClassLabelInput = "class_labels";

    /// <summary>The graph output name.</summary>
    public const string PredictionOutput = "prediction";

    /// <summary>GroupNorm's epsilon (<see cref="Layers.GroupNorm"/>).</summary>
    private const float GroupNormEpsilon = 1e-5f;

    private readonly UNetConfig _net;
    private readonly Dictionary<string, Tensor> _weights;
    private readonly HashSet<string> _used = new();
    private readonly OnnxGraphBuilder _g = new("unet");

    private UNetOnnxExporter(UNet network, Dictionary<string, Tensor> weights)
    {
        _net = network.Config;
        _weights = weights;
    }

    /// <summary>Writes <paramref name="network"/> as ONNX to <paramref name="stream"/>, with <paramref name="config"/> as JSON
    /// in the metadata (and the schedule, T, prediction type, image size and channels as separate keys).</summary>
    public static void Export(UNet network, DiffusionModelConfig config, Stream stream)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(stream);
        Build(network, config).WriteTo(stream);
    }

    /// <summary>Builds the ONNX model of <paramref name="network"/> with <paramref name="config"/> in its metadata.</summary>
    public static ModelProto Build(UNet network, DiffusionModelConfig config)
    {
        using var scope = NewDisposeScope();
        var weights = network.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value);
        var exporter = new UNetOnnxExporter(network, weights);
        exporter.BuildGraph();
        var unused = weights.Keys.Where(k => !exporter._used.Contains(k)).ToArray();
        if (unused.Length > 0)
            throw new InvalidOperationException($"The ONNX export does not cover the U-Net's parameters {string.Join(", ", unused)}; the exporter lags the architecture.");
        var metadata = new Dictionary<string, string>
        {
            [ConfigKey] = config.ToJson(),
            ["schedule"] = config.Schedule.ToString(),
            ["timesteps"] = config.Timesteps.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["prediction_type"] = config.Prediction.ToString(),
            ["variance_type"] = config.Variance.ToString(),
            ["image_size"] = config.SampleSize.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["channels"] = config.SampleChannels.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["num_classes"] = config.Network.NumClasses.ToString(System.Globalization.CultureInfo.InvariantCulture),
        };
        return exporter._g.ToModel(metadata, "Diffusion U-Net: prediction = network(x_t, t" + (config.Network.NumClasses > 0 ? ", class_labels)" : ")"));
    }

    private void BuildGraph()
    {
        int s = _net.ImageSize, b = _net.BaseChannels, groups = _net.GroupNormGroups, heads = _net.AttentionHeads;
        string x = _g.Input(SampleInput, TensorProto.Types.DataType.Float, _net.InChannels, s, s);
        string t = _g.Input(TimestepInput, TensorProto.Types.DataType.Int64);

        var temb = TimeEmbedding("time_embedding", t, b);
        if (_net.NumClasses > 0)
        {
            // guided-diffusion: emb = emb + label_emb(y), the embedding row being a Gather of the class index.
            string y = _g.Input(ClassLabelInput, TensorProto.Types.DataType.Int64);
            var row = _g.Node("Gather", "class_embedding", new[] { W("class_embedding.weight"), y }, Attr("axis", 0L));
            temb = _g.Node("Add", "temb", new[] { temb, row });
        }

        var attentionAt = new HashSet<int>(_net.AttentionResolutions);
        string h = Conv("input_conv", x, stride: 1);
        var skips = new Stack<(string Value, int Channels)>();
        skips.Push((h, b));
        int ch = b, res = s, index = 0, levels = _net.ChannelMultipliers.Length;

        // Down path (UNet's constructor order): every stage's output is kept as a skip.
        for (int level = 0; level < levels; level++)
        {
            int outCh = b * _net.ChannelMultipliers[level];
            for (int i = 0; i < _net.NumResBlocks; i++)
            {
                h = Stage($"down.{index++}", h, temb, ch != outCh, attentionAt.Contains(res), groups, heads);
                ch = outCh;
                skips.Push((h, ch));
            }
            if (level < levels - 1)
            {
                h = Conv($"down.{index++}.conv", h, stride: 2);      // Downsample: stride-2 3x3 convolution
                res /= 2;
                skips.Push((h, ch));
            }
        }

        // Middle: ResBlock, self-attention, ResBlock.
        h = ResBlock("middle.0", h, temb, projectSkip: false, groups);
        h = Attention("middle.1", h, groups, heads);
        h = ResBlock("middle.2", h, temb, projectSkip: false, groups);

        // Up path: each stage reads concat(h, skip) along the channels.
        index = 0;
        for (int level = levels - 1; level >= 0; level--)
        {
            int outCh = b * _net.ChannelMultipliers[level];
            for (int i = 0; i < _net.NumResBlocks + 1; i++)
            {
                var (skip, skipCh) = skips.Pop();
                h = _g.Node("Concat", "skip_concat", new[] { h, skip }, Attr("axis", 1L));
                h = Stage($"up.{index++}.stage", h, temb, ch + skipCh != outCh, attentionAt.Contains(res), groups, heads);
                ch = outCh;
            }
            if (level > 0)
            {
                h = Upsample($"up.{index++}.conv", h);
                res *= 2;
            }
        }
        if (skips.Count != 0) throw new InvalidOperationException("The U-Net walk left skips unused; the exporter lags the architecture.");

        // Output: GroupNorm -> SiLU -> conv3x3.
        h = Conv("output_conv", Silu(GroupNorm("output_norm", h, groups)), stride: 1);
        _g.Output(h, PredictionOutput, _net.OutChannels, s, s);
    }

    /// <summary>A weight initializer, once per parameter name.</summary>
    private string W(string name)
    {
        if (!_weights.TryGetValue(name, out var tensor))
            throw new InvalidOperationException($"The U-Net has no parameter '{name}'; the ONNX exporter lags the architecture.");
        _used.Add(name);
        return _g.Weight(name, tensor);
    }

    /// <summary>A weight reshaped to [C, 1, 1] for broadcasting over [B, C, H, W].</summary>
    private string ChannelWeight(string name)
    {
        using var scope = NewDisposeScope();
        if (!_weights.TryGetValue(name, out var tensor))
            throw new InvalidOperationException($"The U-Net has no parameter '{name}'; the ONNX exporter lags the architecture.");
        _used.Add(name);
        return _g.Weight(name, tensor.reshape(-1, 1, 1));
    }

    /// <summary>emb = Linear2(SiLU(Linear1(sinusoidal(t)))) (<see cref="TimestepEmbedding"/>): sinusoidal(t)_i = sin(t f_i) for
    /// i &lt; d/2 and cos(t f_i) after, f_i = exp(-ln(10000) i / (d/2)), the frequencies computed as TorchSharp does.</summary>
    private string TimeEmbedding(string prefix, string t, int dim)
    {
        int half = dim / 2;
        float[] frequencies;
        using (NewDisposeScope())
            frequencies = (arange(half, dtype: float32) * (-Math.Log(10000.0) / half)).exp().data<float>().ToArray();
        var tf = _g.Node("Cast", "t_float", new[] { t }, Attr("to", (long)TensorProto.Types.DataType.Float));
        var column = _g.Node("Unsqueeze", "t_column", new[] { tf, _g.Int64Constant("axes_1", new long[] { 1 }) });       // [B, 1]
        var args = _g.Node("Mul", "t_args", new[] { column, _g.Floats($"{prefix}.frequencies", frequencies, 1, half) }); // [B, d/2]
        var features = _g.Node("Concat", "t_sinusoidal",
            new[] { _g.Node("Sin", "t_sin", new[] { args }), _g.Node("Cos", "t_cos", new[] { args }) }, Attr("axis", 1L));
        var h = Linear($"{prefix}.linear1", features);
        return Linear($"{prefix}.linear2", Silu(h));
    }

    /// <summary>One U-Net stage (<see cref="ResAttentionBlock"/>): a residual block, then self-attention at the listed resolutions.</summary>
    private string Stage(string prefix, string x, string temb, bool projectSkip, bool attention, int groups, int heads)
    {
        var h = ResBlock($"{prefix}.res", x, temb, projectSkip, groups);
        return attention ? Attention($"{prefix}.attention", h, groups, heads) : h;
    }

    /// <summary><see cref="Models.ResBlock"/> in eval mode: h = conv1(SiLU(GN1(x))) + time_proj(SiLU(temb)); h = conv2(SiLU(GN2(h)))
    /// (dropout is the identity); out = skip(x) + h, skip a 1x1 conv when the width changes.</summary>
    private string ResBlock(string prefix, string x, string temb, bool projectSkip, int groups)
    {
        var h = Conv($"{prefix}.conv1", Silu(GroupNorm($"{prefix}.norm1", x, groups)), stride: 1);
        var tproj = Linear($"{prefix}.time_proj", Silu(temb));                                                   // [B, C]
        tproj = _g.Node("Unsqueeze", "temb_map", new[] { tproj, _g.Int64Constant("axes_2_3", new long[] { 2, 3 }) }); // [B, C, 1, 1]
        h = _g.Node("Add", "res_temb", new[] { h, tproj });
        h = Conv($"{prefix}.conv2", Silu(GroupNorm($"{prefix}.norm2", h, groups)), stride: 1);
        var skip = projectSkip ? Conv($"{prefix}.skip", x, stride: 1) : x;
        return _g.Node("Add", "res_out", new[] { skip, h });
    }

    /// <summary>
    /// <see cref="AttentionBlock"/>: qkv = conv1x1(GN(x)) viewed as [B, 3, heads, d, HW] and permuted to [3, B, heads, HW, d];
    /// out = x + proj(merge(softmax(q k^T / sqrt(d)) v)) (Vaswani et al. 2017, eq. 1).
    /// </summary>
    private string Attention(string prefix, string x, int groups, int heads)
    {
        long c = _weights[$"{prefix}.norm.weight"].shape[0], d = c / heads;
        var qkv = Conv($"{prefix}.qkv", GroupNorm($"{prefix}.norm", x, groups), stride: 1);                   // [B, 3C, H, W]
        var parts = _g.Node("Reshape", "qkv_heads", new[] { qkv, _g.Int64Constant("shape_qkv", new long[] { 0, 3, heads, d, -1 }) });
        parts = _g.Node("Transpose", "qkv_parts", new[] { parts }, Attr("perm", new long[] { 1, 0, 2, 4, 3 })); // [3, B, heads, HW, d]
        string Part(long i, string name) =>
            _g.Node("Gather", name, new[] { parts, _g.Int64Constant($"index_{i}", new[] { i }, scalar: true) }, Attr("axis", 0L));
        var q = Part(0, "q");
        var k = Part(1, "k");
        var v = Part(2, "v");
        var kt = _g.Node("Transpose", "k_t", new[] { k }, Attr("perm", new long[] { 0, 1, 3, 2 }));
        var logits = _g.Node("MatMul", "qk", new[] { q, kt });
        logits = _g.Node("Mul", "qk_scaled", new[] { logits, _g.FloatConstant("attention_scale", new[] { (float)(1.0 / Math.Sqrt(d)) }) });
        var weights = _g.Node("Softmax", "attention_weights", new[] { logits }, Attr("axis", -1L));
        var attended = _g.Node("MatMul", "attended", new[] { weights, v });                                          // [B, heads, HW, d]
        attended = _g.Node("Transpose", "attended_t", new[] { attended }, Attr("perm", new long[] { 0, 1, 3, 2 })); // [B, heads, d, HW]
        var merged = _g.Node("Reshape", "attention_merged", new[] { attended, _g.Node("Shape", "x_shape", new[] { x }) });
        return _g.Node("Add", "attention_out", new[] { x, Conv($"{prefix}.proj", merged, stride: 1) });
    }

    /// <summary><see cref="Upsample"/>: nearest-neighbour 2x (Resize, asymmetric coordinates with floor: U[p, q] = X[p/2, q/2])
    /// then a 3x3 convolution; the sub-pixel form of <see cref="NearestUpsampleConv"/> equals this.</summary>
    private string Upsample(string convPrefix, string x)
    {
        var up = _g.Node("Resize", "upsampled", new[] { x, "", _g.FloatConstant("scales_2x", new float[] { 1, 1, 2, 2 }, 4) },
            Attr("mode", "nearest"), Attr("coordinate_transformation_mode", "asymmetric"), Attr("nearest_mode", "floor"));
        return Conv(convPrefix, up, stride: 1);
    }

    /// <summary>A k x k convolution with padding k/2 (<see cref="Layers.Conv"/>; <see cref="PaddedConv2d"/> and nn.Conv2d alike).</summary>
    private string Conv(string prefix, string x, int stride)
    {
        long k = _weights.TryGetValue($"{prefix}.weight", out var w) ? w.shape[2] : throw new InvalidOperationException($"The U-Net has no parameter '{prefix}.weight'.");
        long p = k / 2;
        return _g.Node("Conv", prefix, new[] { x, W($"{prefix}.weight"), W($"{prefix}.bias") },
            Attr("kernel_shape", new[] { k, k }), Attr("pads", new[] { p, p, p, p }), Attr("strides", new long[] { stride, stride }));
    }

    /// <summary>y = x W^T + b (nn.Linear) as Gemm with transB.</summary>
    private string Linear(string prefix, string x) =>
        _g.Node("Gemm", prefix, new[] { x, W($"{prefix}.weight"), W($"{prefix}.bias") }, Attr("transB", 1L));

    /// <summary>SiLU(x) = x sigmoid(x) (Elfwing et al. 2018).</summary>
    private string Silu(string x) => _g.Node("Mul", "silu", new[] { x, _g.Node("Sigmoid", "sigmoid", new[] { x }) });

    /// <summary>
    /// GroupNorm (Wu &amp; He 2018): x viewed as [B, G, C/G H W] is normalised per (b, g) to zero mean and unit (biased) variance
    /// with epsilon 1e-5 (InstanceNormalization over the last axis with scale 1 and bias 0), viewed back as [B, C, H, W], then
    /// scaled and shifted per channel.
    /// </summary>
    private string GroupNorm(string prefix, string x, int groups)
    {
        var grouped = _g.Node("Reshape", "gn_grouped", new[] { x, _g.Int64Constant("shape_groups", new long[] { 0, groups, -1 }) });
        var normed = _g.Node("InstanceNormalization", "gn_normed",
            new[] { grouped, _g.FloatConstant("gn_ones", Enumerable.Repeat(1f, groups).ToArray(), groups), _g.FloatConstant("gn_zeros", new float[groups], groups) },
            Attr("epsilon", GroupNormEpsilon));
        var back = _g.Node("Reshape", "gn_back", new[] { normed, _g.Node("Shape", "gn_shape", new[] { x }) });
        var scaled = _g.Node("Mul", $"{prefix}.scaled", new[] { back, ChannelWeight($"{prefix}.weight") });
        return _g.Node("Add", prefix, new[] { scaled, ChannelWeight($"{prefix}.bias") });
    }
}
