using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Onnx;
using Microsoft.ML.OnnxRuntime;
using static Microsoft.ML.Diffusion.Tests.Onnx.OnnxTestNetworks;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Onnx;

/// <summary>
/// <see cref="NoisyClassifierModel.ExportOnnx(Stream)"/>: the graph, run by ONNX Runtime, gives the TorchSharp classifier's logits
/// (random weights, the zero-initialised head included) within 1e-4 at batch 1 and 3, at whole and fractional timesteps;
/// the metadata names the diffusion process it was trained for.
/// </summary>
[TestClass]
public class NoisyClassifierOnnxExportTests
{
    /// <summary>A classifier of 8x8 images (base 8, mults 1,2, attention at 4, 2 heads), 4 classes, random weights, for a cosine
    /// schedule of <paramref name="timesteps"/> steps.</summary>
    internal static NoisyClassifierModel RandomClassifier(int channels = 1, int numClasses = 4, long seed = 9, int timesteps = 500)
    {
        var net = new NoisyClassifierConfig
        {
            ImageSize = 8, InChannels = channels, BaseChannels = 8, ChannelMultipliers = new[] { 1, 2 }, NumResBlocks = 1,
            AttentionResolutions = new[] { 4 }, GroupNormGroups = 4, AttentionHeads = 2, NumClasses = numClasses,
        };
        var network = new NoisyClassifierNetwork(net);
        Randomize(network, seed);
        var config = new NoisyClassifierModelConfig { Network = net, Schedule = NoiseSchedule.Cosine, Timesteps = timesteps };
        return new NoisyClassifierModel(new MLContext(seed: 1), config, network, CPU);
    }

    [TestMethod]
    [DataRow(1, 1, false)]
    [DataRow(3, 1, true)]
    [DataRow(3, 3, false)]
    public void LogitsMatchTorchSharp(int batch, int channels, bool fractional)
    {
        using var scope = NewDisposeScope();
        using var classifier = RandomClassifier(channels);
        var x = randn(batch, channels, 8, 8);
        var steps = Enumerable.Range(0, batch).Select(i => (float)(i * 211 % 500 + (fractional ? 0.4 : 0))).ToArray();
        var t = fractional ? tensor(steps) : tensor(steps.Select(v => (long)v).ToArray());
        Tensor expected;
        using (no_grad())
            expected = classifier.LogitsForward(x, t);
        var actual = Run(Export(classifier.ExportOnnx), new (string, Tensor?)[] { ("x_t", x), ("t", tensor(steps)) }, NoisyClassifierOnnxExporter.LogitsOutput);
        CollectionAssert.AreEqual(new long[] { batch, 4 }, expected.shape);
        float diff = MaxDifference(expected, actual);
        Assert.IsTrue(diff <= Tolerance, $"max |onnx - torch| = {diff}");
    }

    [TestMethod]
    public void MetadataNamesTheProcess()
    {
        using var classifier = RandomClassifier(channels: 3, numClasses: 5);
        using var session = new InferenceSession(Export(classifier.ExportOnnx));
        var m = session.ModelMetadata.CustomMetadataMap;
        Assert.AreEqual("noisy_classifier", m["model_kind"]);
        Assert.AreEqual(classifier.Config.ToJson(), m[NoisyClassifierOnnxExporter.ConfigKey]);
        Assert.AreEqual("Cosine", m["schedule"]);
        Assert.AreEqual("500", m["timesteps"]);
        Assert.AreEqual("float32", m["timestep_type"]);
        Assert.AreEqual("8", m["image_size"]);
        Assert.AreEqual("3", m["channels"]);
        Assert.AreEqual("5", m["num_classes"]);
        CollectionAssert.AreEquivalent(new[] { "x_t", "t" }, session.InputMetadata.Keys.ToArray());
        CollectionAssert.AreEqual(new[] { -1, 5 }, session.OutputMetadata["logits"].Dimensions);
        UNetOnnxExportTests.AssertSymbolicBatch(session);
    }
}
