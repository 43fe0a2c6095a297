using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Onnx;
using Microsoft.ML.OnnxRuntime;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Onnx;

/// <summary>
/// <see cref="DiffusionModel.ExportOnnx(Stream)"/>: the exported graph, run by ONNX Runtime, computes what the TorchSharp
/// U-Net's forward computes (random non-zero weights: the zero-initialised output and attention convolutions would hide
/// errors), at batch 1 and 3, for unconditional, class-conditional and learned-variance networks.
/// </summary>
[TestClass]
public class UNetOnnxExportTests
{
    private const float Tolerance = 1e-4f;

    /// <summary>UNetTests' tiny network: 8x8, base 8, mults 1,2, attention at 4, 4 groups, 2 heads.</summary>
    internal static UNetConfig Tiny(int inCh = 1, int outCh = 1, int numClasses = 0, int baseChannels = 8) => new()
    {
        ImageSize = 8, InChannels = inCh, OutChannels = outCh, BaseChannels = baseChannels, ChannelMultipliers = new[] { 1, 2 },
        NumResBlocks = 1, AttentionResolutions = new[] { 4 }, GroupNormGroups = 4, AttentionHeads = 2, NumClasses = numClasses,
    };

    /// <summary>A model around <paramref name="net"/> with every parameter drawn at random (norm scales near 1).</summary>
    internal static DiffusionModel RandomModel(UNetConfig net, VarianceType variance = VarianceType.FixedSmall, long seed = 7)
    {
        var config = new DiffusionModelConfig
        {
            Network = net, ImageSize = net.ImageSize, Channels = variance == VarianceType.Learned ? net.OutChannels / 2 : net.OutChannels,
            Variance = variance, Schedule = NoiseSchedule.Cosine, Prediction = PredictionType.VPrediction,
            LabelColumnName = net.NumClasses > 0 ? "Label" : null,
        };
        var unet = new UNet(net);
        var generator = new torch.Generator((ulong)seed);
        using (no_grad())
            foreach (var (name, p) in unet.named_parameters())
            {
                using var noise = randn(p.shape, generator: generator) * 0.3;
                if (name.Contains("norm") && name.EndsWith("weight")) p.copy_(noise + 1.0);
                else p.copy_(noise);
            }
        return new DiffusionModel(new MLContext(seed: 1), config, unet, CPU);
    }

    private static byte[] Export(DiffusionModel model)
    {
        using var stream = new MemoryStream();
        model.ExportOnnx(stream);
        return stream.ToArray();
    }

    /// <summary>Runs both and returns max |onnx - torch| (and checks the output shape).</summary>
    private static float MaxDifference(DiffusionModel model, int batch, bool withLabels)
    {
        var net = model.Config.Network;
        int s = net.ImageSize;
        var generator = new torch.Generator(123);
        using var x = randn(new long[] { batch, net.InChannels, s, s }, generator: generator);
        var steps = Enumerable.Range(0, batch).Select(i => (long)(i * 997 % 1000)).ToArray();
        steps[0] = 999;
        using var t = tensor(steps);
        // Labels cycle through the classes and include the null label (NumClasses).
        var labels = Enumerable.Range(0, batch).Select(i => (long)((net.NumClasses - i) % (net.NumClasses + 1))).ToArray();
        using var y = withLabels ? tensor(labels) : null;
        float[] expected;
        using (no_grad())
        using (var output = model.Network.forward(x, t, y))
            expected = output.data<float>().ToArray();

        using var session = new InferenceSession(Export(model));
        var inputs = new Dictionary<string, OrtValue>
        {
            [UNetOnnxExporter.SampleInput] = OrtValue.CreateTensorValueFromMemory(x.data<float>().ToArray(), x.shape),
            [UNetOnnxExporter.TimestepInput] = OrtValue.CreateTensorValueFromMemory(steps, new long[] { batch }),
        };
        if (withLabels) inputs[UNetOnnxExporter.ClassLabelInput] = OrtValue.CreateTensorValueFromMemory(labels, new long[] { batch });
        try
        {
            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, inputs, new[] { UNetOnnxExporter.PredictionOutput });
            CollectionAssert.AreEqual(new long[] { batch, net.OutChannels, s, s }, results[0].GetTensorTypeAndShape().Shape);
            var actual = results[0].GetTensorDataAsSpan<float>().ToArray();
            Assert.AreEqual(expected.Length, actual.Length);
            Assert.IsTrue(expected.Any(v => Math.Abs(v) > 1e-2), "the reference output is near zero: weights were not randomised");
            return expected.Zip(actual, (a, b) => Math.Abs(a - b)).Max();
        }
        finally
        {
            foreach (var v in inputs.Values) v.Dispose();
        }
    }

    [TestMethod]
    [DataRow(1)]
    [DataRow(3)]
    public void UnconditionalMatchesTorchSharp(int batch)
    {
        using var model = RandomModel(Tiny());
        float diff = MaxDifference(model, batch, withLabels: false);
        Assert.IsTrue(diff <= Tolerance, $"max |onnx - torch| = {diff}");
    }

    [TestMethod]
    [DataRow(1)]
    [DataRow(3)]
    public void ClassConditionalMatchesTorchSharp(int batch)
    {
        using var model = RandomModel(Tiny(numClasses: 5));
        float diff = MaxDifference(model, batch, withLabels: true);
        Assert.IsTrue(diff <= Tolerance, $"max |onnx - torch| = {diff}");
    }

    [TestMethod]
    [DataRow(1)]
    [DataRow(3)]
    public void LearnedVarianceRgbMatchesTorchSharp(int batch)
    {
        using var model = RandomModel(Tiny(inCh: 3, outCh: 6), VarianceType.Learned);
        float diff = MaxDifference(model, batch, withLabels: false);
        Assert.IsTrue(diff <= Tolerance, $"max |onnx - torch| = {diff}");
    }

    /// <summary>32 channels and more: plain nn.Conv2d layers, and the sub-pixel upsampling (NearestUpsampleConv) in TorchSharp.</summary>
    [TestMethod]
    public void WideNetworkWithSubPixelUpsamplingMatchesTorchSharp()
    {
        using var model = RandomModel(Tiny(baseChannels: 32));
        float diff = MaxDifference(model, 3, withLabels: false);
        Assert.IsTrue(diff <= Tolerance, $"max |onnx - torch| = {diff}");
    }

    /// <summary>The bundled Fashion-MNIST models (28x28, base 32, mults 1,2,2, attention at 7): the unconditional one and the
    /// class-conditional one.</summary>
    [TestMethod]
    [DataRow("fashion-mnist-ddpm.zip")]
    [DataRow("fashion-mnist-cond.zip")]
    public void BundledModelMatchesTorchSharp(string file)
    {
        string path = Path.Combine(Path.GetDirectoryName(Cli.CliBadInputTests.BundledModel)!, file);
        using var model = new MLContext(seed: 1).Generative.LoadDiffusionModel(path);
        float diff = MaxDifference(model, 2, withLabels: model.NumClasses > 0);
        Assert.IsTrue(diff <= Tolerance, $"max |onnx - torch| = {diff}");
    }

    [TestMethod]
    public void MetadataHoldsTheConfigAndTheBatchIsSymbolic()
    {
        using var model = RandomModel(Tiny(numClasses: 3));
        var bytes = Export(model);
        using var session = new InferenceSession(bytes);
        var metadata = session.ModelMetadata.CustomMetadataMap;
        Assert.AreEqual(model.Config.ToJson(), metadata[UNetOnnxExporter.ConfigKey]);
        Assert.AreEqual(model.Config.ToJson(), DiffusionModelConfig.FromJson(metadata[UNetOnnxExporter.ConfigKey]).ToJson());
        Assert.AreEqual("Cosine", metadata["schedule"]);
        Assert.AreEqual("1000", metadata["timesteps"]);
        Assert.AreEqual("VPrediction", metadata["prediction_type"]);
        Assert.AreEqual("8", metadata["image_size"]);
        Assert.AreEqual("1", metadata["channels"]);
        Assert.AreEqual("3", metadata["num_classes"]);

        CollectionAssert.AreEquivalent(new[] { "x_t", "t", "class_labels" }, session.InputMetadata.Keys.ToArray());
        foreach (var (name, input) in session.InputMetadata)
        {
            Assert.AreEqual(-1, input.Dimensions[0], $"{name}'s batch dimension is fixed");
            Assert.AreEqual(OnnxGraphBuilder.BatchDim, input.SymbolicDimensions[0], name);
        }
        CollectionAssert.AreEqual(new[] { -1, 1, 8, 8 }, session.InputMetadata["x_t"].Dimensions);
        Assert.AreEqual(typeof(long), session.InputMetadata["t"].ElementType);
        Assert.AreEqual(typeof(long), session.InputMetadata["class_labels"].ElementType);
        var output = session.OutputMetadata[UNetOnnxExporter.PredictionOutput];
        CollectionAssert.AreEqual(new[] { -1, 1, 8, 8 }, output.Dimensions);
        Assert.AreEqual(OnnxGraphBuilder.BatchDim, output.SymbolicDimensions[0]);

        // A standard model: the default domain at opset 17 or newer, weights as initializers.
        var proto = global::Onnx.ModelProto.Parser.ParseFrom(bytes);
        Assert.IsTrue(proto.OpsetImport.Single(o => o.Domain == "").Version >= 17);
        Assert.AreEqual(model.Network.parameters().Count(), proto.Graph.Initializer.Count(i => model.Network.state_dict().ContainsKey(i.Name)));
    }

    [TestMethod]
    public void ExportToAFileWritesTheSameBytes()
    {
        using var model = RandomModel(Tiny());
        string path = Path.Combine(Path.GetTempPath(), $"unet-{Guid.NewGuid():N}.onnx");
        try
        {
            model.ExportOnnx(path);
            CollectionAssert.AreEqual(Export(model), File.ReadAllBytes(path));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void SelfConditionedModelIsNotExportedYet()
    {
        var net = Tiny(inCh: 2);
        using var model = new DiffusionModel(new MLContext(), new DiffusionModelConfig { Network = net, ImageSize = 8, SelfConditioning = true }, new UNet(net), CPU);
        Assert.ThrowsExactly<NotSupportedException>(() => model.ExportOnnx(new MemoryStream()));
    }
}
