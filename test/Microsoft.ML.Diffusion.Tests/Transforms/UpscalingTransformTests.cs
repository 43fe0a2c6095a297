using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Transforms.Image;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Inpainting;

/// <summary>mlContext.Generative.Upscale: the input pixels sit on every Factor-th pixel of the output, sizes checked, save/load, network calls.</summary>
[TestClass]
public class UpscalingTransformTests
{
    private static TestModel _fixture = null!;
    private static MLContext _ml => _fixture.Ml;
    private static DiffusionModel _model => _fixture.Model;

    public sealed class SmallRow
    {
        [ImageType(4, 4)]
        public MLImage Small { get; set; } = null!;

        public uint Label { get; set; }
    }

    public sealed class TinyRow
    {
        [ImageType(2, 2)]
        public MLImage Small { get; set; } = null!;

        public uint Label { get; set; }
    }

    [ClassInitialize]
    public static void Fit(TestContext _) => _fixture = TestModel.Shared("diffusion-upscale");

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    private static UpscaleOptions Fast(int factor = 2, int resamplings = 2) =>
        new() { Factor = factor, Steps = 6, JumpLength = 2, Resamplings = resamplings, Seed = 8, BatchSize = 2 };

    private static List<SmallRow> Rows(int n) =>
        Enumerable.Range(0, n).Select(i => new SmallRow { Small = TestData.Gray(4, (x, y) => (byte)(20 + 50 * x + 10 * y + i)), Label = (uint)i }).ToList();

    [TestMethod]
    public void InputPixelsLandOnTheGrid()
    {
        var rows = Rows(3);
        var data = _ml.Data.LoadFromEnumerable(rows);
        var output = _ml.Generative.Upscale(_model, "Upscaled", "Small", Fast()).Fit(data).Transform(data);
        Assert.AreEqual(new ImageDataViewType(8, 8), output.Schema["Upscaled"].Type);
        var images = output.GetColumn<MLImage>("Upscaled").ToList();
        for (int r = 0; r < 3; r++)
        {
            Assert.AreEqual(8, images[r].Width);
            var big = TestData.Pixels(images[r]);
            var small = TestData.Pixels(rows[r].Small);
            for (int y = 0; y < 4; y++)
                for (int x = 0; x < 4; x++)
                    Assert.AreEqual(small[4 * (4 * y + x)], big[4 * (8 * 2 * y + 2 * x)], $"row {r}, pixel ({x}, {y})");
        }

        // Factor 4: 2x2 inputs on every fourth pixel.
        var tiny = _ml.Data.LoadFromEnumerable(new[] { new TinyRow { Small = TestData.Gray(2, (x, y) => (byte)(30 + 100 * x + 60 * y)) } });
        var up4 = TestData.Pixels(_ml.Generative.Upscale(_model, "Upscaled", "Small", Fast(4)).Fit(tiny).Transform(tiny).GetColumn<MLImage>("Upscaled").Single());
        Assert.AreEqual(30, up4[0]);
        Assert.AreEqual(130, up4[4 * 4]);
        Assert.AreEqual(90, up4[4 * (8 * 4)]);
        Assert.AreEqual(190, up4[4 * (8 * 4 + 4)]);
    }

    [TestMethod]
    public void WrongSizesAndFactorsAreRejected()
    {
        var eight = _ml.Data.LoadFromEnumerable(TestData.Squares(2));
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Upscale(_model, "Upscaled", "Image", Fast()).Fit(eight));
        StringAssert.Contains(e.Message, "'Image'");
        StringAssert.Contains(e.Message, "8x8");
        StringAssert.Contains(e.Message, "expected 4x4");
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Upscale(_model, "Upscaled", "Small", Fast()).Fit(eight));
        StringAssert.Contains(e.Message, "'Small'");
        StringAssert.Contains(e.Message, "not found");
        var o = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Upscale(_model, "Upscaled", "Small", Fast(3)));
        StringAssert.Contains(o.Message, "Factor");
    }

    [TestMethod]
    public void SaveLoadAndNetworkCalls()
    {
        var data = _ml.Data.LoadFromEnumerable(Rows(3));
        var transformer = _ml.Generative.Upscale(_model, "Upscaled", "Small", Fast()).Fit(data);
        string path = Path.Combine(Path.GetTempPath(), "diffusion-upscale-" + Guid.NewGuid().ToString("N") + ".zip");
        try
        {
            _ml.Model.Save(transformer, data.Schema, path);
            using var loaded = (UpscalingTransformer)new MLContext().Model.Load(path, out _);
            Assert.AreEqual(2, loaded.Options.Factor);
            Assert.AreEqual(4, loaded.InputSize);
            var before = transformer.Transform(data).GetColumn<MLImage>("Upscaled").Select(TestData.Pixels).ToList();
            var after = loaded.Transform(data).GetColumn<MLImage>("Upscaled").Select(TestData.Pixels).ToList();
            for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(before[i], after[i], $"row {i}");
        }
        finally
        {
            File.Delete(path);
        }

        int calls = 0;
        transformer.NetworkOverride = (x, t) =>
        {
            calls++;
            return zeros_like(x);
        };
        Assert.AreEqual(3, transformer.Transform(data).GetColumn<MLImage>("Upscaled").Count());
        Assert.AreEqual(2 * RePaintSchedule.NetworkCalls(6, 2, 2), calls);   // 3 rows in batches of 2
    }

    [TestMethod]
    public void SuperResolutionModelIsSampledWithItsCondition()
    {
        var options = TestData.TinyOptions(steps: 2);
        options.Conditioning = Conditioning.LowResolution(2);
        using var sr = _ml.Generative.Diffusion(options).Fit(_ml.Data.LoadFromEnumerable(TestData.Squares(16).ToList()));
        var rows = Rows(3);
        var data = _ml.Data.LoadFromEnumerable(rows);
        var upscaleOptions = new UpscaleOptions { Factor = 2, Seed = 8, BatchSize = 2 };
        var transformer = _ml.Generative.Upscale(sr, "Upscaled", "Small", upscaleOptions).Fit(data);
        var images = transformer.Transform(data).GetColumn<MLImage>("Upscaled").Select(TestData.Pixels).ToList();

        // The same images straight from the model: its default sampler, the rows' seeds 8, 9, 10, the 4x4 inputs as [3, 1, 4, 4].
        var pixels = new float[3 * 16];
        for (int i = 0; i < 3; i++) Microsoft.ML.Diffusion.Imaging.ImageTensorConverter.ToChw(rows[i].Small, 1, pixels.AsSpan(16 * i, 16));
        using var lowRes = tensor(pixels, new long[] { 3, 1, 4, 4 });
        using var expected = sr.SampleSuperResolution(lowRes, new uint[] { 8, 9, 10 }, sr.DefaultSampler);
        var expectedPixels = Microsoft.ML.Diffusion.Imaging.ImageTensorConverter.ToBgraPixels(expected);
        for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(expectedPixels[i], images[i], $"row {i}");

        // The network call count is the sampler's, not RePaint's: the override hook is for RePaint only and stays unused.
        int calls = 0;
        transformer.NetworkOverride = (x, t) => { calls++; return zeros_like(x); };
        CollectionAssert.AreEqual(images[0], transformer.Transform(data).GetColumn<MLImage>("Upscaled").Select(TestData.Pixels).First());
        Assert.AreEqual(0, calls);

        string path = Path.Combine(Path.GetTempPath(), "diffusion-upscale-sr-" + Guid.NewGuid().ToString("N") + ".zip");
        try
        {
            _ml.Model.Save(transformer, data.Schema, path);
            using var loaded = (UpscalingTransformer)new MLContext().Model.Load(path, out _);
            var after = loaded.Transform(data).GetColumn<MLImage>("Upscaled").Select(TestData.Pixels).ToList();
            for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(images[i], after[i], $"row {i} after save/load");
        }
        finally
        {
            File.Delete(path);
        }

        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Upscale(sr, "Upscaled", "Small", new UpscaleOptions { Factor = 4 }));
        StringAssert.Contains(e.Message, "Factor is 4");
        StringAssert.Contains(e.Message, "factor 2");
    }
}
