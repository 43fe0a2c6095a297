using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Tests.Reliability;
using Microsoft.ML.Transforms.Image;
using static Microsoft.ML.Diffusion.Tests.Onnx.UNetOnnxExportTests;
using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Transforms;

namespace Microsoft.ML.Diffusion.Tests.Onnx;

/// <summary>
/// <see cref="RePaintOptions.Engine"/> = <see cref="InferenceEngine.OnnxRuntime"/> for inpainting and upscaling (RePaint and SR3): the
/// same rows and seeds give TorchSharp's images to float32 rounding, measured as max |x_onnx - x_torch| &lt;= 1e-3 on the [-1, 1]
/// scale of the RePaint output tensors, and at most 2 grey levels between the 8-bit output images of the transforms; the engine is
/// saved with the transformer, a loaded transformer gives identical (byte-equal) images, and a transformer saved before the option
/// (format 0x00010002) loads with TorchSharp.
/// </summary>
[TestClass]
public class OnnxRuntimeTransformTests
{
    private const float TensorTolerance = 1e-3f;
    private const int PixelTolerance = 2;

    public sealed class MaskedRow
    {
        [ImageType(8, 8)]
        public MLImage Image { get; set; } = null!;

        [ImageType(8, 8)]
        public MLImage Mask { get; set; } = null!;

        public uint Label { get; set; }   // a column ML.NET can save with the input schema (it saves no image columns)
    }

    public sealed class SmallRow
    {
        [ImageType(4, 4)]
        public MLImage Small { get; set; } = null!;

        public uint Label { get; set; }
    }

    private static string _dir = null!;

    [ClassInitialize]
    public static void Init(TestContext _) => _dir = TestData.TempDirectory("onnx-transforms");

    [ClassCleanup]
    public static void Cleanup()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static InpaintOptions Inpaint(InferenceEngine engine) =>
        new() { Steps = 6, JumpLength = 2, Resamplings = 2, Seed = 8, BatchSize = 2, Engine = engine };

    private static UpscaleOptions Upscale(InferenceEngine engine) =>
        new() { Factor = 2, Steps = 6, JumpLength = 2, Resamplings = 2, Seed = 8, BatchSize = 2, Engine = engine };

    private static List<MaskedRow> MaskedRows(int n) => Enumerable.Range(0, n).Select(i => new MaskedRow
    {
        Image = TestData.Gray(8, (x, y) => (byte)(30 + 20 * x + 7 * y + 3 * i)),
        Mask = TestData.Gray(8, (x, y) => (byte)(x < 4 || y == i ? 255 : 0)),
    }).ToList();

    private static List<SmallRow> SmallRows(int n) =>
        Enumerable.Range(0, n).Select(i => new SmallRow { Small = TestData.Gray(4, (x, y) => (byte)(20 + 50 * x + 10 * y + i)) }).ToList();

    private static List<byte[]> Column(IDataView view, string column) => view.GetColumn<MLImage>(column).Select(TestData.Pixels).ToList();

    private static int MaxPixelDifference(IReadOnlyList<byte[]> a, IReadOnlyList<byte[]> b)
    {
        Assert.AreEqual(a.Count, b.Count);
        return a.Zip(b, (p, q) => p.Zip(q, (u, v) => Math.Abs(u - v)).Max()).Max();
    }

    /// <summary>RePaint on a tensor batch (3 images, batches of 2) with each engine; returns max |onnx - torch|.</summary>
    private static float RePaintDifference(DiffusionModel model, out Tensor onnxResult)
    {
        using var scope = NewDisposeScope();
        var generator = new TorchSharp.torch.Generator(5);
        var known = rand(new long[] { 3, model.Channels, 8, 8 }, generator: generator) * 2 - 1;
        var mask = (rand(new long[] { 3, 1, 8, 8 }, generator: generator) > 0.5).to_type(float32);
        var seeds = new uint[] { 1, 2, 3 };
        var torchResult = RePaintRunner.Run(model, Inpaint(InferenceEngine.TorchSharp), known, mask, seeds);
        var onnx = RePaintRunner.Run(model, Inpaint(InferenceEngine.OnnxRuntime), known, mask, seeds);
        Assert.IsTrue(torchResult.abs().max().item<float>() > 1e-2, "the images are near zero");
        float diff = (torchResult - onnx).abs().max().item<float>();
        onnxResult = onnx.MoveToOuterDisposeScope();
        return diff;
    }

    [TestMethod]
    public void RePaintTensorsMatchTorchSharp()
    {
        using var model = RandomModel(Tiny());
        float diff = RePaintDifference(model, out var onnx);
        onnx.Dispose();
        Console.WriteLine($"unconditional: max |x_onnx - x_torch| = {diff:G3}");
        Assert.IsTrue(diff <= TensorTolerance, $"max |onnx - torch| = {diff}");
        Assert.IsTrue(model.Pipeline.OnnxNetworkOpened, "the network ran on ONNX Runtime");
    }

    /// <summary>A self-conditioned model: RePaint's concat(x_t, x0_hat) reaches the graph as its two inputs.</summary>
    [TestMethod]
    public void SelfConditionedRePaintMatchesTorchSharp()
    {
        using var model = ConditionedModel(selfConditioning: true, factor: 0);
        float diff = RePaintDifference(model, out var onnx);
        onnx.Dispose();
        Console.WriteLine($"self-conditioned: max |x_onnx - x_torch| = {diff:G3}");
        Assert.IsTrue(diff <= TensorTolerance, $"max |onnx - torch| = {diff}");
    }

    /// <summary>A latent model: RePaint on the latents with the U-Net on ONNX Runtime, then the decoder's graph.</summary>
    [TestMethod]
    public void LatentRePaintMatchesTorchSharp()
    {
        using var model = LatentModel(out var autoencoder);
        using (autoencoder)
        {
            float diff = RePaintDifference(model, out var onnx);
            onnx.Dispose();
            Console.WriteLine($"latent: max |x_onnx - x_torch| = {diff:G3}");
            Assert.IsTrue(diff <= TensorTolerance, $"max |onnx - torch| = {diff}");
            Assert.IsTrue(autoencoder.OnnxDecoderOpened, "the decoder ran on ONNX Runtime");
        }
    }

    [TestMethod]
    public void InpaintTransformMatchesTorchSharp()
    {
        var ml = new MLContext(seed: 1);
        using var model = RandomModel(Tiny());
        var data = ml.Data.LoadFromEnumerable(MaskedRows(3));
        var torchImages = Column(ml.Generative.Inpaint(model, "Out", "Image", "Mask", Inpaint(InferenceEngine.TorchSharp)).Fit(data).Transform(data), "Out");
        var onnxImages = Column(ml.Generative.Inpaint(model, "Out", "Image", "Mask", Inpaint(InferenceEngine.OnnxRuntime)).Fit(data).Transform(data), "Out");
        int diff = MaxPixelDifference(torchImages, onnxImages);
        Console.WriteLine($"inpaint: max pixel difference {diff}");
        Assert.IsTrue(diff <= PixelTolerance, $"max pixel difference {diff}");
        Assert.IsTrue(MaxPixelDifference(torchImages, MaskedRows(3).Select(r => TestData.Pixels(r.Image)).ToList()) > 10, "the masked pixels were sampled");
    }

    [TestMethod]
    public void RePaintUpscaleMatchesTorchSharp()
    {
        var ml = new MLContext(seed: 1);
        using var model = RandomModel(Tiny());
        var data = ml.Data.LoadFromEnumerable(SmallRows(3));
        var torchImages = Column(ml.Generative.Upscale(model, "Big", "Small", Upscale(InferenceEngine.TorchSharp)).Fit(data).Transform(data), "Big");
        var onnxImages = Column(ml.Generative.Upscale(model, "Big", "Small", Upscale(InferenceEngine.OnnxRuntime)).Fit(data).Transform(data), "Big");
        int diff = MaxPixelDifference(torchImages, onnxImages);
        Console.WriteLine($"RePaint upscale: max pixel difference {diff}");
        Assert.IsTrue(diff <= PixelTolerance, $"max pixel difference {diff}");
    }

    /// <summary>SR3: the transform hands its engine to the model's sampler; the low-resolution image goes to the graph.</summary>
    [TestMethod]
    public void SuperResolutionUpscaleMatchesTorchSharp()
    {
        var ml = new MLContext(seed: 1);
        using var model = ConditionedModel(selfConditioning: false, factor: 2);
        using var fast = model.WithSampler(new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 6 });
        var data = ml.Data.LoadFromEnumerable(SmallRows(3));
        var torchImages = Column(ml.Generative.Upscale(fast, "Big", "Small", Upscale(InferenceEngine.TorchSharp)).Fit(data).Transform(data), "Big");
        Assert.IsFalse(fast.Pipeline.OnnxNetworkOpened, "TorchSharp opened no session");
        var onnxImages = Column(ml.Generative.Upscale(fast, "Big", "Small", Upscale(InferenceEngine.OnnxRuntime)).Fit(data).Transform(data), "Big");
        Assert.IsTrue(fast.Pipeline.OnnxNetworkOpened, "the network ran on ONNX Runtime");
        int diff = MaxPixelDifference(torchImages, onnxImages);
        Console.WriteLine($"SR3 upscale: max pixel difference {diff}");
        Assert.IsTrue(diff <= PixelTolerance, $"max pixel difference {diff}");
    }

    [TestMethod]
    public void InpaintSaveAndLoadKeepTheEngine()
    {
        var ml = new MLContext(seed: 1);
        using var model = RandomModel(Tiny());
        var data = ml.Data.LoadFromEnumerable(MaskedRows(3));
        var transformer = ml.Generative.Inpaint(model, "Out", "Image", "Mask", Inpaint(InferenceEngine.OnnxRuntime)).Fit(data);
        string path = Path.Combine(_dir, "inpaint-onnx.zip");
        ml.Model.Save(transformer, data.Schema, path);
        using var loaded = (InpaintingTransformer)new MLContext().Model.Load(path, out _);
        Assert.AreEqual(InferenceEngine.OnnxRuntime, loaded.Options.Engine);
        var before = Column(transformer.Transform(data), "Out");
        var after = Column(loaded.Transform(data), "Out");
        for (int i = 0; i < before.Count; i++) CollectionAssert.AreEqual(before[i], after[i], $"row {i}");
        Assert.IsTrue(loaded.Model.Pipeline.OnnxNetworkOpened, "the loaded transformer ran on ONNX Runtime");

        // A transformer of the format before the option (0x00010002, no engine field) loads with TorchSharp.
        string old = Path.Combine(_dir, "inpaint-old.zip");
        var torchTransformer = ml.Generative.Inpaint(model, "Out", "Image", "Mask", Inpaint(InferenceEngine.TorchSharp)).Fit(data);
        ml.Model.Save(torchTransformer, data.Schema, old);
        File.WriteAllBytes(old, AsOldFormat(File.ReadAllBytes(old)));
        using var oldLoaded = (InpaintingTransformer)new MLContext().Model.Load(old, out _);
        Assert.AreEqual(InferenceEngine.TorchSharp, oldLoaded.Options.Engine);
        Assert.AreEqual("Mask", oldLoaded.MaskColumnName);
        var oldImages = Column(oldLoaded.Transform(data), "Out");
        var torchImages = Column(torchTransformer.Transform(data), "Out");
        for (int i = 0; i < oldImages.Count; i++) CollectionAssert.AreEqual(torchImages[i], oldImages[i], $"row {i}");
        Assert.IsFalse(oldLoaded.Model.Pipeline.OnnxNetworkOpened, "an old transformer runs on TorchSharp");
    }

    [TestMethod]
    public void UpscaleSaveAndLoadKeepTheEngine()
    {
        var ml = new MLContext(seed: 1);
        using var model = RandomModel(Tiny());
        var data = ml.Data.LoadFromEnumerable(SmallRows(3));
        var transformer = ml.Generative.Upscale(model, "Big", "Small", Upscale(InferenceEngine.OnnxRuntime)).Fit(data);
        string path = Path.Combine(_dir, "upscale-onnx.zip");
        ml.Model.Save(transformer, data.Schema, path);
        using var loaded = (UpscalingTransformer)new MLContext().Model.Load(path, out _);
        Assert.AreEqual(InferenceEngine.OnnxRuntime, loaded.Options.Engine);
        Assert.AreEqual(2, loaded.Options.Factor);
        var before = Column(transformer.Transform(data), "Big");
        var after = Column(loaded.Transform(data), "Big");
        for (int i = 0; i < before.Count; i++) CollectionAssert.AreEqual(before[i], after[i], $"row {i}");

        string old = Path.Combine(_dir, "upscale-old.zip");
        ml.Model.Save(ml.Generative.Upscale(model, "Big", "Small", Upscale(InferenceEngine.TorchSharp)).Fit(data), data.Schema, old);
        File.WriteAllBytes(old, AsOldFormat(File.ReadAllBytes(old)));
        using var oldLoaded = (UpscalingTransformer)new MLContext().Model.Load(old, out _);
        Assert.AreEqual(InferenceEngine.TorchSharp, oldLoaded.Options.Engine);
        Assert.AreEqual(2, oldLoaded.Options.Factor);
    }

    [TestMethod]
    public void UnknownEngineIsNamed()
    {
        using var model = RandomModel(Tiny());
        var options = Inpaint((InferenceEngine)7);
        var error = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new MLContext().Generative.Inpaint(model, "Out", "Image", "Mask", options));
        StringAssert.Contains(error.Message, "InpaintOptions.Engine");
        StringAssert.Contains(error.Message, "7");
        StringAssert.Contains(error.Message, "OnnxRuntime");
    }

    /// <summary>The saved transformer with its own Model.key (the shortest path: the diffusion model's sub-model has its own) as format
    /// 0x00010002 wrote it.</summary>
    private static byte[] AsOldFormat(byte[] zip)
    {
        var entries = ReliabilityKit.Entries(zip);
        string transformerKey = entries.Select(e => e.Key).Where(k => k.EndsWith("Model.key", StringComparison.Ordinal)).OrderBy(k => k.Length).First();
        return ReliabilityKit.Zip(entries.Select(e => e.Key == transformerKey ? new KeyValuePair<string, byte[]>(e.Key, WithoutEngineField(e.Value)) : e));
    }

    /// <summary>Model.key as format 0x00010002 wrote it: the version fields set back and the trailing int32 engine field (the last
    /// field of the transformer's block, a TorchSharp 0) removed, with the ML.NET header's model size adjusted.</summary>
    private static byte[] WithoutEngineField(byte[] modelKey) => ReliabilityKit.RemoveLastModelBytes(ReliabilityKit.ChangeVersion(modelKey, 0x00010002, 0x00010002), 4);
}
