using Google.Protobuf;
using Microsoft.ML.Diffusion.Onnx;
using Microsoft.ML.OnnxRuntime;
using static Microsoft.ML.Diffusion.Tests.Onnx.OnnxTestNetworks;
using static Microsoft.ML.Diffusion.Tests.Onnx.UNetOnnxExportTests;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Onnx;

/// <summary>
/// Exported files on disk: each loads in a fresh ONNX Runtime session and gives the TorchSharp output; <see cref="OnnxModelFile"/>
/// names the file and the fault for random bytes, a truncated file, an ONNX model of another graph, a network of another
/// kind, a graph ONNX Runtime refuses, and a missing file.
/// </summary>
[TestClass]
public class OnnxModelFileTests
{
    private static string _dir = null!;

    [ClassInitialize]
    public static void Init(TestContext _) => _dir = TestData.TempDirectory("onnx-files");

    [ClassCleanup]
    public static void Cleanup()
    {
        if (_dir is not null && Directory.Exists(_dir)) Directory.Delete(_dir, true);
    }

    private static string PathOf(string name) => Path.Combine(_dir, name);

    [TestMethod]
    public void AnExportedFileLoadsFromDiskAndGivesTheSameOutput()
    {
        using var scope = NewDisposeScope();
        using var model = ConditionedModel(selfConditioning: true, factor: 2, numClasses: 2);
        string path = PathOf("sr3.onnx");
        model.ExportOnnx(path);

        var file = OnnxModelFile.Open(path, OnnxMetadata.DiffusionUNet);
        Assert.AreEqual(OnnxMetadata.DiffusionUNet, file.Kind);
        Assert.AreEqual(model.Config.ToJson(), file.Metadata[Microsoft.ML.Diffusion.Onnx.UNetOnnxExporter.ConfigKey]);
        var inputs = Inputs(model, 2);
        var expected = TorchForward(model, inputs);
        // A fresh session straight from the path (ONNX Runtime reads the file itself).
        using var session = new InferenceSession(path);
        var fromDisk = Run(session, new (string, Tensor?)[]
        {
            ("x_t", inputs.X), ("t", inputs.T.to_type(float32)), ("class_labels", inputs.Labels), ("self_condition", inputs.SelfCondition),
            ("low_resolution", inputs.LowResolution),
        }, "prediction");
        Assert.IsTrue(MaxDifference(expected, fromDisk) <= Tolerance);
        // The in-memory export gives the same bits.
        Assert.AreEqual(0f, (OnnxForward(ExportBytes(model), inputs) - fromDisk).abs().max().item<float>());
    }

    [TestMethod]
    public void EveryKindOpensWithItsKind()
    {
        using var autoencoder = RandomAutoencoder(TinyAutoencoder());
        using var classifier = NoisyClassifierOnnxExportTests.RandomClassifier();
        autoencoder.ExportEncoderOnnx(PathOf("encoder.onnx"));
        autoencoder.ExportDecoderOnnx(PathOf("decoder.onnx"));
        classifier.ExportOnnx(PathOf("classifier.onnx"));
        Assert.AreEqual(OnnxMetadata.AutoencoderEncoder, OnnxModelFile.Open(PathOf("encoder.onnx")).Kind);
        Assert.AreEqual(OnnxMetadata.AutoencoderDecoder, OnnxModelFile.Open(PathOf("decoder.onnx"), OnnxMetadata.AutoencoderDecoder).Kind);
        Assert.AreEqual(OnnxMetadata.NoisyClassifier, OnnxModelFile.Open(PathOf("classifier.onnx"), OnnxMetadata.NoisyClassifier).Kind);

        var error = Assert.ThrowsExactly<InvalidDataException>(() => OnnxModelFile.Open(PathOf("decoder.onnx"), OnnxMetadata.DiffusionUNet));
        StringAssert.Contains(error.Message, PathOf("decoder.onnx"));
        StringAssert.Contains(error.Message, "autoencoder_decoder");
        StringAssert.Contains(error.Message, "diffusion_unet");
    }

    [TestMethod]
    public void RandomBytesAreNamed()
    {
        string path = PathOf("random.onnx");
        var bytes = new byte[4096];
        new Random(3).NextBytes(bytes);
        File.WriteAllBytes(path, bytes);
        var error = Assert.ThrowsExactly<InvalidDataException>(() => OnnxModelFile.Open(path));
        StringAssert.Contains(error.Message, path);
        StringAssert.Contains(error.Message, "not an ONNX model");
    }

    [TestMethod]
    public void ATruncatedFileIsNamed()
    {
        using var model = RandomModel(Tiny());
        var bytes = ExportBytes(model);
        string path = PathOf("truncated.onnx");
        File.WriteAllBytes(path, bytes.AsSpan(0, bytes.Length / 2).ToArray());
        var error = Assert.ThrowsExactly<InvalidDataException>(() => OnnxModelFile.Open(path));
        StringAssert.Contains(error.Message, path);
        StringAssert.Contains(error.Message, "not an ONNX model");
    }

    /// <summary>A valid ONNX model of another graph (y = x + x, written by another producer) has none of the library's metadata.</summary>
    [TestMethod]
    public void AForeignOnnxModelIsNamed()
    {
        var graph = new global::Onnx.GraphProto { Name = "add" };
        graph.Node.Add(new global::Onnx.NodeProto { OpType = "Add", Input = { "x", "x" }, Output = { "y" } });
        global::Onnx.ValueInfoProto Value(string name) => new()
        {
            Name = name,
            Type = new global::Onnx.TypeProto
            {
                TensorType = new global::Onnx.TypeProto.Types.Tensor
                {
                    ElemType = (int)global::Onnx.TensorProto.Types.DataType.Float,
                    Shape = new global::Onnx.TensorShapeProto { Dim = { new global::Onnx.TensorShapeProto.Types.Dimension { DimValue = 4 } } },
                },
            },
        };
        graph.Input.Add(Value("x"));
        graph.Output.Add(Value("y"));
        var foreign = new global::Onnx.ModelProto { IrVersion = 8, ProducerName = "pytorch", Graph = graph };
        foreign.OpsetImport.Add(new global::Onnx.OperatorSetIdProto { Domain = "", Version = 17 });
        string path = PathOf("foreign.onnx");
        File.WriteAllBytes(path, foreign.ToByteArray());
        using (var session = new InferenceSession(path)) Assert.AreEqual(1, session.InputMetadata.Count, "ONNX Runtime runs it");

        var error = Assert.ThrowsExactly<InvalidDataException>(() => OnnxModelFile.Open(path));
        StringAssert.Contains(error.Message, path);
        StringAssert.Contains(error.Message, "not one exported by Microsoft.ML.Diffusion");
        StringAssert.Contains(error.Message, "pytorch");
        StringAssert.Contains(error.Message, "model_kind");
    }

    /// <summary>The library's metadata on a graph that lost a weight: ONNX Runtime's refusal, with the file's name.</summary>
    [TestMethod]
    public void ADamagedGraphIsNamed()
    {
        using var model = RandomModel(Tiny());
        var proto = global::Onnx.ModelProto.Parser.ParseFrom(ExportBytes(model));
        proto.Graph.Initializer.RemoveAt(0);
        string path = PathOf("damaged.onnx");
        File.WriteAllBytes(path, proto.ToByteArray());
        var error = Assert.ThrowsExactly<InvalidDataException>(() => OnnxModelFile.Open(path));
        StringAssert.Contains(error.Message, path);
        StringAssert.Contains(error.Message, "ONNX Runtime cannot load it");
    }

    [TestMethod]
    public void AMissingFileIsNamed()
    {
        string path = PathOf("missing.onnx");
        var error = Assert.ThrowsExactly<FileNotFoundException>(() => OnnxModelFile.Open(path));
        StringAssert.Contains(error.Message, path);
    }
}
