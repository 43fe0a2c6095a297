using Microsoft.ML.Diffusion.Onnx;
using Microsoft.ML.OnnxRuntime;
using static Microsoft.ML.Diffusion.Tests.Onnx.OnnxTestNetworks;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Onnx;

/// <summary>
/// <see cref="AutoencoderModel.ExportEncoderOnnx(Stream)"/> and <see cref="AutoencoderModel.ExportDecoderOnnx(Stream)"/>: each
/// graph, run by ONNX Runtime, computes what the TorchSharp autoencoder computes (random weights), within 1e-4 at batch 1 and
/// 3, for factors 2 and 4 and grayscale and RGB; the metadata describes the autoencoder.
/// </summary>
[TestClass]
public class AutoencoderOnnxExportTests
{
    [TestMethod]
    [DataRow(1, 1, 2)]
    [DataRow(3, 1, 2)]
    [DataRow(3, 3, 4)]
    public void EncoderMatchesTorchSharp(int batch, int channels, int factor)
    {
        using var scope = NewDisposeScope();
        using var autoencoder = RandomAutoencoder(TinyAutoencoder(channels, latentChannels: 3, factor));
        var images = rand(batch, channels, 8, 8) * 2 - 1;
        var (mean, logVar) = autoencoder.EncodeDistribution(images);
        var onnx = Export(autoencoder.ExportEncoderOnnx);
        var inputs = new (string, Tensor?)[] { (AutoencoderOnnxExporter.ImageName, images) };
        var onnxMean = Run(onnx, inputs, AutoencoderOnnxExporter.MeanOutput);
        var onnxLogVar = Run(onnx, inputs, AutoencoderOnnxExporter.LogVarianceOutput);
        CollectionAssert.AreEqual(new long[] { batch, 3, 8 / factor, 8 / factor }, mean.shape);
        float diff = Math.Max(MaxDifference(mean, onnxMean), MaxDifference(logVar, onnxLogVar));
        Assert.IsTrue(diff <= Tolerance, $"max |onnx - torch| = {diff}");
    }

    [TestMethod]
    [DataRow(1, 1, 2)]
    [DataRow(3, 1, 2)]
    [DataRow(3, 3, 4)]
    public void DecoderMatchesTorchSharp(int batch, int channels, int factor)
    {
        using var scope = NewDisposeScope();
        using var autoencoder = RandomAutoencoder(TinyAutoencoder(channels, latentChannels: 3, factor));
        var latents = randn(batch, 3, 8 / factor, 8 / factor);
        var images = autoencoder.Decode(latents);
        var onnxImages = Run(Export(autoencoder.ExportDecoderOnnx), new (string, Tensor?)[] { (AutoencoderOnnxExporter.LatentInput, latents) },
            AutoencoderOnnxExporter.ImageName);
        CollectionAssert.AreEqual(new long[] { batch, channels, 8, 8 }, images.shape);
        float diff = MaxDifference(images, onnxImages);
        Assert.IsTrue(diff <= Tolerance, $"max |onnx - torch| = {diff}");
    }

    [TestMethod]
    public void MetadataDescribesTheAutoencoder()
    {
        using var autoencoder = RandomAutoencoder(TinyAutoencoder(channels: 3, latentChannels: 2, factor: 4));
        using var encoder = new InferenceSession(Export(autoencoder.ExportEncoderOnnx));
        using var decoder = new InferenceSession(Export(autoencoder.ExportDecoderOnnx));
        Assert.AreEqual("autoencoder_encoder", encoder.ModelMetadata.CustomMetadataMap["model_kind"]);
        Assert.AreEqual("autoencoder_decoder", decoder.ModelMetadata.CustomMetadataMap["model_kind"]);
        foreach (var session in new[] { encoder, decoder })
        {
            var m = session.ModelMetadata.CustomMetadataMap;
            Assert.AreEqual(autoencoder.Config.ToJson(), m[AutoencoderOnnxExporter.ConfigKey]);
            Assert.AreEqual("8", m["image_size"]);
            Assert.AreEqual("3", m["channels"]);
            Assert.AreEqual("2", m["latent_channels"]);
            Assert.AreEqual("2", m["latent_size"]);
            Assert.AreEqual("4", m["downsampling_factor"]);
            UNetOnnxExportTests.AssertSymbolicBatch(session);
        }
        CollectionAssert.AreEqual(new[] { "image" }, encoder.InputMetadata.Keys.ToArray());
        CollectionAssert.AreEquivalent(new[] { "mean", "log_variance" }, encoder.OutputMetadata.Keys.ToArray());
        CollectionAssert.AreEqual(new[] { -1, 2, 2, 2 }, encoder.OutputMetadata["mean"].Dimensions);
        CollectionAssert.AreEqual(new[] { "latent" }, decoder.InputMetadata.Keys.ToArray());
        CollectionAssert.AreEqual(new[] { -1, 3, 8, 8 }, decoder.OutputMetadata["image"].Dimensions);
        // Each graph holds its half of the weights only.
        var encoderProto = global::Onnx.ModelProto.Parser.ParseFrom(Export(autoencoder.ExportEncoderOnnx));
        var decoderProto = global::Onnx.ModelProto.Parser.ParseFrom(Export(autoencoder.ExportDecoderOnnx));
        Assert.IsTrue(encoderProto.Graph.Initializer.All(i => !i.Name.StartsWith("decoder.") && !i.Name.StartsWith("post_quant_conv")));
        Assert.IsTrue(decoderProto.Graph.Initializer.All(i => !i.Name.StartsWith("encoder.") && !i.Name.StartsWith("quant_conv")));
    }

    [TestMethod]
    public void ExportToFilesWritesTheStreamsBytes()
    {
        using var autoencoder = RandomAutoencoder(TinyAutoencoder());
        string dir = TestData.TempDirectory("ae-onnx");
        try
        {
            autoencoder.ExportEncoderOnnx(Path.Combine(dir, "encoder.onnx"));
            autoencoder.ExportDecoderOnnx(Path.Combine(dir, "decoder.onnx"));
            CollectionAssert.AreEqual(Export(autoencoder.ExportEncoderOnnx), File.ReadAllBytes(Path.Combine(dir, "encoder.onnx")));
            CollectionAssert.AreEqual(Export(autoencoder.ExportDecoderOnnx), File.ReadAllBytes(Path.Combine(dir, "decoder.onnx")));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
