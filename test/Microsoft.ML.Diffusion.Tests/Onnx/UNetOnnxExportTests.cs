using Microsoft.ML.Diffusion.Conditions;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Onnx;
using Microsoft.ML.OnnxRuntime;
using static Microsoft.ML.Diffusion.Tests.Onnx.OnnxTestNetworks;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Onnx;

/// <summary>
/// <see cref="DiffusionModel.ExportOnnx(Stream)"/>: the exported graph, run by ONNX Runtime, computes what the TorchSharp
/// U-Net's forward computes on the input the sampling loop assembles (random non-zero weights), within 1e-4 at batch 1 and 3,
/// for every network the library trains: unconditional, class-conditional, learned variance, self-conditioned,
/// super-resolution (the low-resolution image upsampled inside the graph), all of them together, latent, and at
/// fractional timesteps.
/// </summary>
[TestClass]
public class UNetOnnxExportTests
{
    /// <summary>UNetTests' tiny network: 8x8, base 8, mults 1,2, attention at 4, 4 groups, 2 heads.</summary>
    internal static UNetConfig Tiny(int inCh = 1, int outCh = 1, int numClasses = 0, int baseChannels = 8) => new()
    {
        ImageSize = 8, InChannels = inCh, OutChannels = outCh, BaseChannels = baseChannels, ChannelMultipliers = new[] { 1, 2 },
        NumResBlocks = 1, AttentionResolutions = new[] { 4 }, GroupNormGroups = 4, AttentionHeads = 2, NumClasses = numClasses,
    };

    /// <summary>A model around <paramref name="net"/> with every parameter drawn at random (norm scales near 1);
    /// <paramref name="configure"/> adds self-conditioning, conditioning or a latent space to the config.</summary>
    internal static DiffusionModel RandomModel(UNetConfig net, VarianceType variance = VarianceType.FixedSmall, long seed = 7,
        Func<DiffusionModelConfig, DiffusionModelConfig>? configure = null, AutoencoderModel? autoencoder = null, MLContext? ml = null)
    {
        int outputChannels = variance == VarianceType.Learned ? net.OutChannels / 2 : net.OutChannels;
        var config = new DiffusionModelConfig
        {
            Network = net, ImageSize = net.ImageSize, Channels = outputChannels,
            Variance = variance, Schedule = NoiseSchedule.Cosine, Prediction = PredictionType.VPrediction,
            LabelColumnName = net.NumClasses > 0 ? "Label" : null,
        };
        if (configure is not null) config = configure(config);
        var unet = new UNet(net);
        Randomize(unet, seed);
        return new DiffusionModel(ml ?? new MLContext(seed: 1), config, unet, CPU, autoencoder: autoencoder);
    }

    /// <summary>A self-conditioned (x_t and x0_hat), super-resolution (factor <paramref name="factor"/>) model of
    /// <paramref name="channels"/>-channel images, either or both.</summary>
    internal static DiffusionModel ConditionedModel(bool selfConditioning, int factor, int channels = 1, int numClasses = 0, long seed = 7)
    {
        int inCh = channels * (selfConditioning ? 2 : 1) + (factor > 0 ? channels : 0);
        return RandomModel(Tiny(inCh, channels, numClasses), seed: seed, configure: c => c with
        {
            SelfConditioning = selfConditioning, Conditioning = factor > 0 ? Conditioning.LowResolution(factor) : null,
        });
    }

    /// <summary>A latent model on the 4x4, 2-channel latents of a random 8x8 autoencoder, latent scale 1.7.</summary>
    internal static DiffusionModel LatentModel(out AutoencoderModel autoencoder, int numClasses = 0)
    {
        autoencoder = RandomAutoencoder(TinyAutoencoder());
        var net = Tiny(inCh: 2, outCh: 2, numClasses: numClasses) with { ImageSize = 4 };
        return RandomModel(net, autoencoder: autoencoder, configure: c => c with
        {
            ImageSize = 8, Channels = 1, Latent = new LatentSpace { DownsamplingFactor = 2, LatentChannels = 2, ScaleFactor = 1.7 },
        });
    }

    /// <summary>Random inputs for <paramref name="model"/>'s graph at <paramref name="batch"/>: x_t ~ N(0, I), timesteps spread over
    /// 0..T-1 (plus 0.37 when <paramref name="fractional"/>), labels cycling through the classes and the null label, a
    /// self-condition and a low-resolution image in [-1, 1].</summary>
    internal static (Tensor X, Tensor T, Tensor? Labels, Tensor? SelfCondition, Tensor? LowResolution) Inputs(DiffusionModel model, int batch,
        bool fractional = false, long seed = 123)
    {
        var c = model.Config;
        int s = c.SampleSize, ch = c.SampleChannels;
        var generator = new TorchSharp.torch.Generator((ulong)seed);
        var x = randn(new long[] { batch, ch, s, s }, generator: generator);
        var steps = Enumerable.Range(0, batch).Select(i => (double)(i * 997 % 1000)).ToArray();
        steps[0] = 999;
        // The sampler passes whole-number timesteps as int64 and continuous ones as float32 (DiffusionSampler.ModelTimesteps).
        var t = fractional ? tensor(steps.Select(v => (float)(v * 0.98 + 0.37)).ToArray()) : tensor(steps.Select(v => (long)v).ToArray());
        int classes = c.Network.NumClasses;
        var labels = classes > 0 ? tensor(Enumerable.Range(0, batch).Select(i => (long)((classes - i) % (classes + 1))).ToArray()) : null;
        var selfCondition = c.SelfConditioning ? rand(new long[] { batch, ch, s, s }, generator: generator) * 2 - 1 : null;
        Tensor? low = null;
        if (c.Conditioning is { } cond)
        {
            int small = cond.LowResolutionSize(c.ImageSize);
            low = rand(new long[] { batch, c.Channels, small, small }, generator: generator) * 2.2 - 1.1;   // a little outside [-1, 1]: the clamp counts
        }
        return (x, t, labels, selfCondition, low);
    }

    /// <summary>The TorchSharp U-Net on concat(x_t, x0_hat, upsample(low-res)) (the sampling loop's input), eval mode.</summary>
    internal static Tensor TorchForward(DiffusionModel model, (Tensor X, Tensor T, Tensor? Labels, Tensor? SelfCondition, Tensor? LowResolution) inputs)
    {
        using var noGrad = no_grad();
        var input = inputs.SelfCondition is null ? inputs.X : cat(new[] { inputs.X, inputs.SelfCondition }, 1);
        if (inputs.LowResolution is not null)
            input = ConditionedNetwork.AppendChannels(input, LowResolutionCondition.Upsample(inputs.LowResolution, model.ImageSize));
        return model.Network.forward(input, inputs.T, inputs.Labels);
    }

    /// <summary>The exported graph on the same inputs (t as float32, the graph's type).</summary>
    internal static Tensor OnnxForward(byte[] onnx, (Tensor X, Tensor T, Tensor? Labels, Tensor? SelfCondition, Tensor? LowResolution) inputs) =>
        Run(onnx, new (string, Tensor?)[]
        {
            (UNetOnnxExporter.SampleInput, inputs.X), (UNetOnnxExporter.TimestepInput, inputs.T.to_type(float32)),
            (UNetOnnxExporter.ClassLabelInput, inputs.Labels), (UNetOnnxExporter.SelfConditionInput, inputs.SelfCondition),
            (UNetOnnxExporter.LowResolutionInput, inputs.LowResolution),
        }, UNetOnnxExporter.PredictionOutput);

    internal static byte[] ExportBytes(DiffusionModel model) => Export(model.ExportOnnx);

    /// <summary>max |onnx - torch| for random inputs at <paramref name="batch"/>; checks the output shape.</summary>
    private static float MaxOnnxDifference(DiffusionModel model, int batch, bool fractional = false)
    {
        using var scope = NewDisposeScope();
        var inputs = Inputs(model, batch, fractional);
        using var expected = TorchForward(model, inputs);
        var net = model.Config.Network;
        CollectionAssert.AreEqual(new long[] { batch, net.OutChannels, net.ImageSize, net.ImageSize }, expected.shape);
        using var actual = OnnxForward(ExportBytes(model), inputs);
        return MaxDifference(expected, actual);
    }

    private static void AssertMatches(DiffusionModel model, int batch, bool fractional = false)
    {
        float diff = MaxOnnxDifference(model, batch, fractional);
        Console.WriteLine($"batch {batch}: max |onnx - torch| = {diff:G3}");
        Assert.IsTrue(diff <= Tolerance, $"batch {batch}: max |onnx - torch| = {diff}");
    }

    [TestMethod]
    [DataRow(1)]
    [DataRow(3)]
    public void UnconditionalMatchesTorchSharp(int batch)
    {
        using var model = RandomModel(Tiny());
        AssertMatches(model, batch);
    }

    /// <summary>Real-valued t (the Karras-sigma samplers' continuous timesteps): the sinusoidal embedding of the graph's float t.</summary>
    [TestMethod]
    [DataRow(1)]
    [DataRow(3)]
    public void FractionalTimestepsMatchTorchSharp(int batch)
    {
        using var model = RandomModel(Tiny(numClasses: 3));
        AssertMatches(model, batch, fractional: true);
    }

    [TestMethod]
    [DataRow(1)]
    [DataRow(3)]
    public void ClassConditionalMatchesTorchSharp(int batch)
    {
        using var model = RandomModel(Tiny(numClasses: 5));
        AssertMatches(model, batch);
    }

    [TestMethod]
    [DataRow(1)]
    [DataRow(3)]
    public void LearnedVarianceRgbMatchesTorchSharp(int batch)
    {
        using var model = RandomModel(Tiny(inCh: 3, outCh: 6), VarianceType.Learned);
        AssertMatches(model, batch);
    }

    /// <summary>Self-conditioning (Analog Bits): x_t and x0_hat as two graph inputs, concatenated inside.</summary>
    [TestMethod]
    [DataRow(1)]
    [DataRow(3)]
    public void SelfConditionedMatchesTorchSharp(int batch)
    {
        using var model = ConditionedModel(selfConditioning: true, factor: 0);
        AssertMatches(model, batch);
    }

    /// <summary>SR3: the low-resolution image is a graph input, upsampled (bicubic, a = -0.75, half-pixel) and clamped inside.</summary>
    [TestMethod]
    [DataRow(1, 2)]
    [DataRow(3, 2)]
    [DataRow(3, 4)]
    public void SuperResolutionMatchesTorchSharp(int batch, int factor)
    {
        using var model = ConditionedModel(selfConditioning: false, factor: factor, channels: 3);
        AssertMatches(model, batch);
    }

    /// <summary>Self-conditioning, a low-resolution condition and class labels in one network.</summary>
    [TestMethod]
    [DataRow(1)]
    [DataRow(3)]
    public void SelfConditionedSuperResolutionWithLabelsMatchesTorchSharp(int batch)
    {
        using var model = ConditionedModel(selfConditioning: true, factor: 2, numClasses: 2);
        AssertMatches(model, batch);
    }

    /// <summary>Latent diffusion: the U-Net on the autoencoder's latent grid (4x4, 2 channels).</summary>
    [TestMethod]
    [DataRow(1)]
    [DataRow(3)]
    public void LatentUNetMatchesTorchSharp(int batch)
    {
        using var model = LatentModel(out var autoencoder);
        using (autoencoder)
            AssertMatches(model, batch);
    }

    /// <summary>32 channels and more: plain nn.Conv2d layers, and the sub-pixel upsampling (NearestUpsampleConv) in TorchSharp.</summary>
    [TestMethod]
    public void WideNetworkWithSubPixelUpsamplingMatchesTorchSharp()
    {
        using var model = RandomModel(Tiny(baseChannels: 32));
        AssertMatches(model, 3);
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
        AssertMatches(model, 2);
    }

    [TestMethod]
    public void MetadataHoldsTheConfigAndTheBatchIsSymbolic()
    {
        using var model = RandomModel(Tiny(numClasses: 3));
        var bytes = ExportBytes(model);
        using var session = new InferenceSession(bytes);
        var metadata = session.ModelMetadata.CustomMetadataMap;
        Assert.AreEqual(model.Config.ToJson(), metadata[UNetOnnxExporter.ConfigKey]);
        Assert.AreEqual(model.Config.ToJson(), DiffusionModelConfig.FromJson(metadata[UNetOnnxExporter.ConfigKey]).ToJson());
        Assert.AreEqual("diffusion_unet", metadata["model_kind"]);
        Assert.AreEqual("Cosine", metadata["schedule"]);
        Assert.AreEqual("1000", metadata["timesteps"]);
        Assert.AreEqual("float32", metadata["timestep_type"]);
        Assert.AreEqual("VPrediction", metadata["prediction_type"]);
        Assert.AreEqual("8", metadata["image_size"]);
        Assert.AreEqual("1", metadata["channels"]);
        Assert.AreEqual("3", metadata["num_classes"]);
        Assert.AreEqual("false", metadata["self_conditioning"]);
        Assert.IsFalse(metadata.ContainsKey("conditioning"));
        Assert.IsFalse(metadata.ContainsKey("latent_scale_factor"));

        CollectionAssert.AreEquivalent(new[] { "x_t", "t", "class_labels" }, session.InputMetadata.Keys.ToArray());
        CollectionAssert.AreEqual(new[] { -1, 1, 8, 8 }, session.InputMetadata["x_t"].Dimensions);
        Assert.AreEqual(typeof(float), session.InputMetadata["t"].ElementType);
        Assert.AreEqual(typeof(long), session.InputMetadata["class_labels"].ElementType);
        AssertSymbolicBatch(session);
        CollectionAssert.AreEqual(new[] { -1, 1, 8, 8 }, session.OutputMetadata[UNetOnnxExporter.PredictionOutput].Dimensions);

        // A standard model: the default domain at opset 17 or newer, weights as initializers.
        var proto = global::Onnx.ModelProto.Parser.ParseFrom(bytes);
        Assert.IsTrue(proto.OpsetImport.Single(o => o.Domain == "").Version >= 17);
        Assert.AreEqual(model.Network.parameters().Count(), proto.Graph.Initializer.Count(i => model.Network.state_dict().ContainsKey(i.Name)));
    }

    /// <summary>Every input and output has the symbolic batch dimension.</summary>
    internal static void AssertSymbolicBatch(InferenceSession session)
    {
        foreach (var (name, value) in session.InputMetadata.Concat(session.OutputMetadata))
        {
            Assert.AreEqual(-1, value.Dimensions[0], $"{name}'s batch dimension is fixed");
            Assert.AreEqual(OnnxGraphBuilder.BatchDim, value.SymbolicDimensions[0], name);
        }
    }

    [TestMethod]
    public void ConditionedAndLatentMetadataNameTheirInputs()
    {
        using (var model = ConditionedModel(selfConditioning: true, factor: 4, channels: 3))
        {
            using var session = new InferenceSession(ExportBytes(model));
            var metadata = session.ModelMetadata.CustomMetadataMap;
            Assert.AreEqual("true", metadata["self_conditioning"]);
            Assert.AreEqual("LowResolution(4)", metadata["conditioning"]);
            Assert.AreEqual("2", metadata["low_resolution_size"]);
            CollectionAssert.AreEquivalent(new[] { "x_t", "t", "self_condition", "low_resolution" }, session.InputMetadata.Keys.ToArray());
            CollectionAssert.AreEqual(new[] { -1, 3, 8, 8 }, session.InputMetadata["self_condition"].Dimensions);
            CollectionAssert.AreEqual(new[] { -1, 3, 2, 2 }, session.InputMetadata["low_resolution"].Dimensions);
            AssertSymbolicBatch(session);
        }
        using (var latent = LatentModel(out var autoencoder))
        using (autoencoder)
        {
            using var session = new InferenceSession(ExportBytes(latent));
            var metadata = session.ModelMetadata.CustomMetadataMap;
            Assert.AreEqual("8", metadata["image_size"]);
            Assert.AreEqual("1", metadata["channels"]);
            Assert.AreEqual("4", metadata["sample_size"]);
            Assert.AreEqual("2", metadata["sample_channels"]);
            Assert.AreEqual("2", metadata["latent_downsampling_factor"]);
            Assert.AreEqual("2", metadata["latent_channels"]);
            Assert.AreEqual(1.7, double.Parse(metadata["latent_scale_factor"], System.Globalization.CultureInfo.InvariantCulture));
            CollectionAssert.AreEqual(new[] { -1, 2, 4, 4 }, session.InputMetadata["x_t"].Dimensions);
        }
    }

    [TestMethod]
    public void ExportToAFileWritesTheSameBytes()
    {
        using var model = RandomModel(Tiny());
        string path = Path.Combine(Path.GetTempPath(), $"unet-{Guid.NewGuid():N}.onnx");
        try
        {
            model.ExportOnnx(path);
            CollectionAssert.AreEqual(ExportBytes(model), File.ReadAllBytes(path));
            Assert.IsFalse(File.Exists(path + ".tmp"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>A network whose input channels do not fit the config (x_t, self-condition, condition) is refused by name.</summary>
    [TestMethod]
    public void InputChannelsThatDoNotFitTheConfigAreNamed()
    {
        using var model = RandomModel(Tiny(inCh: 1), configure: c => c with { SelfConditioning = true });
        var error = Assert.ThrowsExactly<InvalidOperationException>(() => model.ExportOnnx(new MemoryStream()));
        StringAssert.Contains(error.Message, "self_condition");
        StringAssert.Contains(error.Message, "1 input channels");
    }
}
