using Onnx;
using TorchSharp;
using static Microsoft.ML.Diffusion.Onnx.OnnxGraphBuilder;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Onnx;

/// <summary>
/// The layers the library's networks share, written as ONNX nodes that compute what the TorchSharp modules compute in eval
/// mode: convolutions, linear layers, GroupNorm, SiLU, nearest upsampling, the sinusoidal time embedding, the time-conditioned
/// residual block and self-attention of the U-Net. Each weight is taken from the network's state_dict by name and becomes a
/// float32 initializer of the same name; <see cref="Finish"/> fails when a parameter was not used, so an architecture change
/// not mirrored by an exporter fails the export instead of silently producing a different network.
/// </summary>
/// <remarks>Channel-padded and sub-pixel convolutions (<see cref="Models.PaddedConv2d"/>, <see cref="Models.NearestUpsampleConv"/>)
/// are written as the plain convolutions they equal.</remarks>
internal abstract class OnnxNetworkWriter
{
    /// <summary>GroupNorm's epsilon (<see cref="Models.Layers.GroupNorm"/>).</summary>
    private const float GroupNormEpsilon = 1e-5f;

    private readonly Dictionary<string, Tensor> _weights;
    private readonly HashSet<string> _used = new();
    private readonly string _what;

    /// <summary>The graph under construction.</summary>
    protected OnnxGraphBuilder G { get; }

    /// <summary>Starts a graph named <paramref name="graphName"/> over <paramref name="weights"/> (the state_dict of the
    /// network, called <paramref name="what"/> in errors); the tensors must live until the graph is built.</summary>
    protected OnnxNetworkWriter(Dictionary<string, Tensor> weights, string graphName, string what)
    {
        _weights = weights;
        _what = what;
        G = new OnnxGraphBuilder(graphName);
    }

    /// <summary>The model: the graph with <paramref name="metadata"/>; throws when a weight was not written (of those whose names
    /// start with one of <paramref name="prefixes"/>, when given: the part of the network the graph covers).</summary>
    protected ModelProto Finish(IEnumerable<KeyValuePair<string, string>> metadata, string docString, params string[] prefixes)
    {
        var unused = _weights.Keys
            .Where(k => (prefixes.Length == 0 || prefixes.Any(p => k.StartsWith(p, StringComparison.Ordinal))) && !_used.Contains(k)).ToArray();
        if (unused.Length > 0)
            throw new InvalidOperationException($"The ONNX export does not cover the {_what}'s parameters {string.Join(", ", unused)}; the exporter lags the architecture.");
        return G.ToModel(metadata, docString);
    }

    /// <summary>True when the network has a parameter named <paramref name="name"/>.</summary>
    protected bool Has(string name) => _weights.ContainsKey(name);

    /// <summary>The shape of parameter <paramref name="name"/>.</summary>
    protected long[] ShapeOf(string name) => Get(name).shape;

    private Tensor Get(string name) => _weights.TryGetValue(name, out var tensor)
        ? tensor
        : throw new InvalidOperationException($"The {_what} has no parameter '{name}'; the ONNX exporter lags the architecture.");

    /// <summary>A weight initializer, once per parameter name.</summary>
    protected string W(string name)
    {
        var tensor = Get(name);
        _used.Add(name);
        return G.Weight(name, tensor);
    }

    /// <summary>A weight reshaped to [C, 1, 1] for broadcasting over [B, C, H, W].</summary>
    protected string ChannelWeight(string name)
    {
        using var scope = NewDisposeScope();
        var tensor = Get(name);
        _used.Add(name);
        return G.Weight(name, tensor.reshape(-1, 1, 1));
    }

    /// <summary>A k x k convolution with padding k/2 (<see cref="Models.Layers.Conv"/>; <see cref="Models.PaddedConv2d"/> and nn.Conv2d alike).</summary>
    protected string Conv(string prefix, string x, int stride = 1)
    {
        long k = ShapeOf($"{prefix}.weight")[2];
        long p = k / 2;
        return G.Node("Conv", prefix, new[] { x, W($"{prefix}.weight"), W($"{prefix}.bias") },
            Attr("kernel_shape", new[] { k, k }), Attr("pads", new[] { p, p, p, p }), Attr("strides", new long[] { stride, stride }));
    }

    /// <summary>y = x W^T + b (nn.Linear) as Gemm with transB.</summary>
    protected string Linear(string prefix, string x) =>
        G.Node("Gemm", prefix, new[] { x, W($"{prefix}.weight"), W($"{prefix}.bias") }, Attr("transB", 1L));

    /// <summary>SiLU(x) = x sigmoid(x) (Elfwing et al. 2018).</summary>
    protected string Silu(string x) => G.Node("Mul", "silu", new[] { x, G.Node("Sigmoid", "sigmoid", new[] { x }) });

    /// <summary>
    /// GroupNorm (Wu &amp; He 2018): x viewed as [B, G, C/G H W] is normalised per (b, g) to zero mean and unit (biased) variance
    /// with epsilon 1e-5 (InstanceNormalization over the last axis with scale 1 and bias 0), viewed back as [B, C, H, W], then
    /// scaled and shifted per channel.
    /// </summary>
    protected string GroupNorm(string prefix, string x, int groups)
    {
        var grouped = G.Node("Reshape", "gn_grouped", new[] { x, G.Int64Constant("shape_groups", new long[] { 0, groups, -1 }) });
        var normed = G.Node("InstanceNormalization", "gn_normed",
            new[] { grouped, G.FloatConstant("gn_ones", Enumerable.Repeat(1f, groups).ToArray(), groups), G.FloatConstant("gn_zeros", new float[groups], groups) },
            Attr("epsilon", GroupNormEpsilon));
        var back = G.Node("Reshape", "gn_back", new[] { normed, G.Node("Shape", "gn_shape", new[] { x }) });
        var scaled = G.Node("Mul", $"{prefix}.scaled", new[] { back, ChannelWeight($"{prefix}.weight") });
        return G.Node("Add", prefix, new[] { scaled, ChannelWeight($"{prefix}.bias") });
    }

    /// <summary>Nearest-neighbour 2x upsampling (Resize, asymmetric coordinates with floor: U[p, q] = X[p/2, q/2]), then the
    /// 3x3 convolution <paramref name="convPrefix"/> (the U-Net's <see cref="Models.Upsample"/>, the autoencoder's upsampling).</summary>
    protected string UpsampleConv(string convPrefix, string x)
    {
        var up = G.Node("Resize", "upsampled", new[] { x, "", G.FloatConstant("scales_2x", new float[] { 1, 1, 2, 2 }, 4) },
            Attr("mode", "nearest"), Attr("coordinate_transformation_mode", "asymmetric"), Attr("nearest_mode", "floor"));
        return Conv(convPrefix, up);
    }

    /// <summary>
    /// emb = Linear2(SiLU(Linear1(sinusoidal(t)))) (<see cref="Models.TimestepEmbedding"/>) of the float32 timesteps
    /// <paramref name="t"/> [B]: sinusoidal(t)_i = sin(t f_i) for i &lt; d/2 and cos(t f_i) after, f_i = exp(-ln(10000) i / (d/2))
    /// (Vaswani et al. 2017, section 3.5), the frequencies computed as TorchSharp does. Real t works as well as whole numbers.
    /// </summary>
    protected string TimeEmbedding(string prefix, string t, int dim)
    {
        int half = dim / 2;
        float[] frequencies;
        using (NewDisposeScope())
            frequencies = (arange(half, dtype: float32) * (-Math.Log(10000.0) / half)).exp().data<float>().ToArray();
        var column = G.Node("Unsqueeze", "t_column", new[] { t, G.Int64Constant("axes_1", new long[] { 1 }) });       // [B, 1]
        var args = G.Node("Mul", "t_args", new[] { column, G.Floats($"{prefix}.frequencies", frequencies, 1, half) }); // [B, d/2]
        var features = G.Node("Concat", "t_sinusoidal",
            new[] { G.Node("Sin", "t_sin", new[] { args }), G.Node("Cos", "t_cos", new[] { args }) }, Attr("axis", 1L));
        var h = Linear($"{prefix}.linear1", features);
        return Linear($"{prefix}.linear2", Silu(h));
    }

    /// <summary>One U-Net stage (<see cref="Models.ResAttentionBlock"/>): a residual block, then self-attention when the network has one there.</summary>
    protected string Stage(string prefix, string x, string temb, int groups, int heads)
    {
        var h = TimeResBlock($"{prefix}.res", x, temb, groups);
        return Has($"{prefix}.attention.norm.weight") ? Attention($"{prefix}.attention", h, groups, heads) : h;
    }

    /// <summary><see cref="Models.ResBlock"/> in eval mode: h = conv1(SiLU(GN1(x))) + time_proj(SiLU(temb)); h = conv2(SiLU(GN2(h)))
    /// (dropout is the identity); out = skip(x) + h, skip a 1x1 conv when the width changes.</summary>
    protected string TimeResBlock(string prefix, string x, string temb, int groups)
    {
        var h = Conv($"{prefix}.conv1", Silu(GroupNorm($"{prefix}.norm1", x, groups)));
        var tproj = Linear($"{prefix}.time_proj", Silu(temb));                                                   // [B, C]
        tproj = G.Node("Unsqueeze", "temb_map", new[] { tproj, G.Int64Constant("axes_2_3", new long[] { 2, 3 }) }); // [B, C, 1, 1]
        h = G.Node("Add", "res_temb", new[] { h, tproj });
        h = Conv($"{prefix}.conv2", Silu(GroupNorm($"{prefix}.norm2", h, groups)));
        var skip = Has($"{prefix}.skip.weight") ? Conv($"{prefix}.skip", x) : x;
        return G.Node("Add", "res_out", new[] { skip, h });
    }

    /// <summary>A residual block without time embedding (<see cref="Models.AutoencoderResBlock"/>): h = conv2(SiLU(GN2(conv1(SiLU(GN1(x))))));
    /// out = skip(x) + h, skip a 1x1 conv when the width changes.</summary>
    protected string PlainResBlock(string prefix, string x, int groups)
    {
        var h = Conv($"{prefix}.conv1", Silu(GroupNorm($"{prefix}.norm1", x, groups)));
        h = Conv($"{prefix}.conv2", Silu(GroupNorm($"{prefix}.norm2", h, groups)));
        var skip = Has($"{prefix}.skip.weight") ? Conv($"{prefix}.skip", x) : x;
        return G.Node("Add", "res_out", new[] { skip, h });
    }

    /// <summary>
    /// <see cref="Models.AttentionBlock"/>: qkv = conv1x1(GN(x)) viewed as [B, 3, heads, d, HW] and permuted to [3, B, heads, HW, d];
    /// out = x + proj(merge(softmax(q k^T / sqrt(d)) v)) (Vaswani et al. 2017, eq. 1).
    /// </summary>
    protected string Attention(string prefix, string x, int groups, int heads)
    {
        long c = ShapeOf($"{prefix}.norm.weight")[0], d = c / heads;
        var qkv = Conv($"{prefix}.qkv", GroupNorm($"{prefix}.norm", x, groups));                               // [B, 3C, H, W]
        var parts = G.Node("Reshape", "qkv_heads", new[] { qkv, G.Int64Constant("shape_qkv", new long[] { 0, 3, heads, d, -1 }) });
        parts = G.Node("Transpose", "qkv_parts", new[] { parts }, Attr("perm", new long[] { 1, 0, 2, 4, 3 })); // [3, B, heads, HW, d]
        string Part(long i, string name) =>
            G.Node("Gather", name, new[] { parts, G.Int64Constant($"index_{i}", new[] { i }, scalar: true) }, Attr("axis", 0L));
        var q = Part(0, "q");
        var k = Part(1, "k");
        var v = Part(2, "v");
        var kt = G.Node("Transpose", "k_t", new[] { k }, Attr("perm", new long[] { 0, 1, 3, 2 }));
        var logits = G.Node("MatMul", "qk", new[] { q, kt });
        logits = G.Node("Mul", "qk_scaled", new[] { logits, G.FloatConstant("attention_scale", new[] { (float)(1.0 / Math.Sqrt(d)) }) });
        var weights = G.Node("Softmax", "attention_weights", new[] { logits }, Attr("axis", -1L));
        var attended = G.Node("MatMul", "attended", new[] { weights, v });                                          // [B, heads, HW, d]
        attended = G.Node("Transpose", "attended_t", new[] { attended }, Attr("perm", new long[] { 0, 1, 3, 2 })); // [B, heads, d, HW]
        var merged = G.Node("Reshape", "attention_merged", new[] { attended, G.Node("Shape", "x_shape", new[] { x }) });
        return G.Node("Add", "attention_out", new[] { x, Conv($"{prefix}.proj", merged) });
    }

    /// <summary>The U-Net encoder walk shared by the U-Net and the noisy classifier (the constructors' order): input_conv, then
    /// per level NumResBlocks stages and a stride-2 convolution between levels, then the middle block (ResBlock, attention,
    /// ResBlock). Returns the middle block's output and every skip (the input convolution's output and each down stage's).</summary>
    protected (string Middle, Stack<string> Skips) EncoderHalf(string x, string temb, int[] multipliers, int numResBlocks, int groups, int heads)
    {
        string h = Conv("input_conv", x);
        var skips = new Stack<string>();
        skips.Push(h);
        int index = 0;
        for (int level = 0; level < multipliers.Length; level++)
        {
            for (int i = 0; i < numResBlocks; i++)
            {
                h = Stage($"down.{index++}", h, temb, groups, heads);
                skips.Push(h);
            }
            if (level < multipliers.Length - 1)
            {
                h = Conv($"down.{index++}.conv", h, stride: 2);      // Downsample: stride-2 3x3 convolution
                skips.Push(h);
            }
        }
        h = TimeResBlock("middle.0", h, temb, groups);
        h = Attention("middle.1", h, groups, heads);
        h = TimeResBlock("middle.2", h, temb, groups);
        return (h, skips);
    }
}
