using Google.Protobuf;
using Onnx;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Onnx;

/// <summary>
/// Builds an ONNX graph (the protobuf messages of OnnxSharp) node by node: weights become float32 initializers, every
/// node gets a fresh, unique output name, and <see cref="ToModel"/> wraps the graph in a model of the default ONNX domain
/// at <see cref="Opset"/>. Graph inputs and outputs have a symbolic batch dimension (<see cref="BatchDim"/>).
/// </summary>
internal sealed class OnnxGraphBuilder
{
    /// <summary>The default-domain opset the graph uses (ONNX 1.12; Reshape, Unsqueeze, Resize take their shapes as inputs).</summary>
    public const long Opset = 17;

    /// <summary>IR version 8 (ONNX 1.10 and newer), the lowest that opset 17 allows.</summary>
    public const long IrVersion = 8;

    /// <summary>The name of the symbolic batch dimension of every graph input and output.</summary>
    public const string BatchDim = "batch";

    private readonly GraphProto _graph;
    private readonly Dictionary<string, int> _counts = new();
    private readonly Dictionary<string, string> _constants = new();

    /// <summary>Starts an empty graph named <paramref name="name"/>.</summary>
    public OnnxGraphBuilder(string name) => _graph = new GraphProto { Name = name };

    /// <summary>Declares a graph input of element type <paramref name="type"/> and shape [batch, ..<paramref name="dims"/>].</summary>
    public string Input(string name, TensorProto.Types.DataType type, params long[] dims)
    {
        _graph.Input.Add(ValueInfo(name, type, dims));
        return name;
    }

    /// <summary>Names the value <paramref name="value"/> as the graph output <paramref name="name"/> (through an Identity node)
    /// of element type float32 and shape [batch, ..<paramref name="dims"/>].</summary>
    public void Output(string value, string name, params long[] dims)
    {
        _graph.Node.Add(NewNode("Identity", new[] { value }, name, Array.Empty<AttributeProto>()));
        _graph.Output.Add(ValueInfo(name, TensorProto.Types.DataType.Float, dims));
    }

    /// <summary>Adds a float32 initializer holding <paramref name="tensor"/> (copied to the CPU as float32; shape kept).</summary>
    public string Weight(string name, Tensor tensor)
    {
        using var scope = NewDisposeScope();
        var cpu = tensor.detach().to(float32).cpu().contiguous();
        var values = cpu.data<float>().ToArray();
        return Floats(name, values, cpu.shape);
    }

    /// <summary>Adds a float32 initializer with <paramref name="values"/> in row-major order and shape <paramref name="dims"/>.</summary>
    public string Floats(string name, float[] values, params long[] dims)
    {
        var bytes = new byte[values.Length * sizeof(float)];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("ONNX raw tensor data is little-endian.");
        return AddInitializer(name, TensorProto.Types.DataType.Float, bytes, dims);
    }

    /// <summary>Adds an int64 initializer (a shape, axes or index list) of shape [values.Length], or a scalar when
    /// <paramref name="scalar"/>.</summary>
    public string Int64s(string name, long[] values, bool scalar = false)
    {
        var bytes = new byte[values.Length * sizeof(long)];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        return AddInitializer(name, TensorProto.Types.DataType.Int64, bytes, scalar ? Array.Empty<long>() : new long[] { values.Length });
    }

    /// <summary>A float32 constant (shape <paramref name="dims"/>) shared by every node that asks for the same name and values.</summary>
    public string FloatConstant(string name, float[] values, params long[] dims) =>
        Shared($"f:{name}:{string.Join(",", dims)}:{string.Join(",", values.Select(v => BitConverter.SingleToInt32Bits(v)))}",
            () => Floats(name, values, dims));

    /// <summary>An int64 constant of shape [values.Length] (or a scalar) shared by every node that asks for the same name and values.</summary>
    public string Int64Constant(string name, long[] values, bool scalar = false) =>
        Shared($"i:{name}:{scalar}:{string.Join(",", values)}", () => Int64s(name, values, scalar));

    /// <summary>Adds a node of <paramref name="opType"/> with one output, named after <paramref name="name"/>; returns the output.</summary>
    public string Node(string opType, string name, string[] inputs, params AttributeProto[] attributes)
    {
        string output = Unique(name);
        _graph.Node.Add(NewNode(opType, inputs, output, attributes));
        return output;
    }

    /// <summary>An int attribute.</summary>
    public static AttributeProto Attr(string name, long value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    /// <summary>A float attribute.</summary>
    public static AttributeProto Attr(string name, float value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    /// <summary>A string attribute.</summary>
    public static AttributeProto Attr(string name, string value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) };

    /// <summary>An ints attribute.</summary>
    public static AttributeProto Attr(string name, long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.Add(values);
        return a;
    }

    /// <summary>The model: this graph, the default ONNX domain at <see cref="Opset"/>, and <paramref name="metadata"/> as metadata_props.</summary>
    public ModelProto ToModel(IEnumerable<KeyValuePair<string, string>> metadata, string docString)
    {
        var model = new ModelProto
        {
            IrVersion = IrVersion,
            ProducerName = "Microsoft.ML.Diffusion",
            ProducerVersion = typeof(OnnxGraphBuilder).Assembly.GetName().Version?.ToString() ?? "",
            DocString = docString,
            Graph = _graph,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = Opset });
        foreach (var (key, value) in metadata)
            model.MetadataProps.Add(new StringStringEntryProto { Key = key, Value = value });
        return model;
    }

    private string AddInitializer(string name, TensorProto.Types.DataType type, byte[] bytes, long[] dims)
    {
        string unique = Unique(name);
        var t = new TensorProto { Name = unique, DataType = (int)type, RawData = ByteString.CopyFrom(bytes) };
        t.Dims.Add(dims);
        _graph.Initializer.Add(t);
        return unique;
    }

    private string Shared(string key, Func<string> add)
    {
        if (!_constants.TryGetValue(key, out var name)) _constants[key] = name = add();
        return name;
    }

    private string Unique(string name)
    {
        int n = _counts.TryGetValue(name, out var c) ? c : 0;
        _counts[name] = n + 1;
        return n == 0 ? name : $"{name}_{n}";
    }

    private static NodeProto NewNode(string opType, string[] inputs, string output, AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = opType, Name = output };
        node.Input.Add(inputs);
        node.Output.Add(output);
        node.Attribute.Add(attributes);
        return node;
    }

    private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, long[] dims)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = BatchDim });
        foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }
}
