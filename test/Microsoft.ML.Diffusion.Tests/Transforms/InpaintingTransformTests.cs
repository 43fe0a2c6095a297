using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Transforms.Image;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Inpainting;

/// <summary>mlContext.Generative.Inpaint: known pixels kept, network calls, mask column kinds, save/load, bad input, PredictionEngine, image pipelines.</summary>
[TestClass]
public class InpaintingTransformTests
{
    private static TestModel _fixture = null!;
    private static MLContext _ml => _fixture.Ml;
    private static DiffusionModel _model => _fixture.Model;
    private static string _dir => _fixture.Directory;

    public sealed class MaskedRow
    {
        [ImageType(8, 8)]
        public MLImage Image { get; set; } = null!;

        [ImageType(8, 8)]
        public MLImage Mask { get; set; } = null!;

        public uint Label { get; set; }
    }

    public sealed class VectorMaskRow
    {
        [ImageType(8, 8)]
        public MLImage Image { get; set; } = null!;

        [VectorType(64)]
        public bool[] Mask { get; set; } = new bool[64];
    }

    public sealed class FloatMaskRow
    {
        [ImageType(8, 8)]
        public MLImage Image { get; set; } = null!;

        [VectorType(64)]
        public float[] Mask { get; set; } = new float[64];
    }

    public sealed class ShortMaskRow
    {
        [ImageType(8, 8)]
        public MLImage Image { get; set; } = null!;

        [VectorType(10)]
        public float[] Mask { get; set; } = new float[10];
    }

    public sealed class Output
    {
        [ImageType(8, 8)]
        public MLImage Inpainted { get; set; } = null!;
    }

    [ClassInitialize]
    public static void Fit(TestContext _) => _fixture = TestModel.Shared("diffusion-inpaint");

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    private static InpaintOptions Fast(int resamplings = 2) => new() { Steps = 6, JumpLength = 2, Resamplings = resamplings, Seed = 4, BatchSize = 2 };

    private static bool[] Keep(int row) => InpaintMasks.Create(InpaintMaskKind.Wide, 8, 100 + row);

    private static List<MaskedRow> Rows(int count) =>
        TestData.Squares(count, seed: 5).Select((r, i) => new MaskedRow { Image = r.Image, Mask = InpaintMasks.ToImage(Keep(i), 8), Label = r.Label }).ToList();

    private static List<byte[]> Inpaint(IDataView data, string? mask, InpaintOptions options) =>
        _ml.Generative.Inpaint(_model, "Inpainted", "Image", mask, options).Fit(data).Transform(data)
            .GetColumn<MLImage>("Inpainted").Select(TestData.Pixels).ToList();

    [TestMethod]
    public void KnownPixelsAreKeptExactly()
    {
        var rows = Rows(5);
        var data = _ml.Data.LoadFromEnumerable(rows);
        var outputs = Inpaint(data, "Mask", Fast());
        Assert.AreEqual(5, outputs.Count);
        for (int r = 0; r < 5; r++)
        {
            var input = TestData.Pixels(rows[r].Image);
            var keep = Keep(r);
            int changed = 0;
            for (int p = 0; p < 64; p++)
            {
                if (keep[p]) Assert.AreEqual(input[4 * p], outputs[r][4 * p], $"row {r}, known pixel {p}");
                else if (input[4 * p] != outputs[r][4 * p]) changed++;
            }
            Assert.IsTrue(changed > 0, $"row {r}: the filled pixels are sampled");
        }
    }

    [TestMethod]
    public void BuiltInMaskIsSeededPerRow()
    {
        var rows = Rows(3);
        var data = _ml.Data.LoadFromEnumerable(rows);
        var options = Fast();
        options.Mask = InpaintMaskKind.Thin;
        var outputs = Inpaint(data, null, options);
        for (int r = 0; r < 3; r++)
        {
            var keep = InpaintMasks.Create(InpaintMaskKind.Thin, 8, (int)options.Seed + r);
            var input = TestData.Pixels(rows[r].Image);
            for (int p = 0; p < 64; p++)
                if (keep[p]) Assert.AreEqual(input[4 * p], outputs[r][4 * p], $"row {r}, pixel {p}");
        }
    }

    [TestMethod]
    public void VectorMasksEqualTheImageMask()
    {
        var rows = Rows(2);
        var fromImages = Inpaint(_ml.Data.LoadFromEnumerable(rows), "Mask", Fast());
        var bools = rows.Select((r, i) => new VectorMaskRow { Image = r.Image, Mask = Keep(i) }).ToList();
        var floats = rows.Select((r, i) => new FloatMaskRow { Image = r.Image, Mask = Keep(i).Select(k => k ? 1f : 0f).ToArray() }).ToList();
        var fromBools = Inpaint(_ml.Data.LoadFromEnumerable(bools), "Mask", Fast());
        var fromFloats = Inpaint(_ml.Data.LoadFromEnumerable(floats), "Mask", Fast());
        for (int i = 0; i < 2; i++)
        {
            CollectionAssert.AreEqual(fromImages[i], fromBools[i], $"row {i}");
            CollectionAssert.AreEqual(fromImages[i], fromFloats[i], $"row {i}");
        }
    }

    [TestMethod]
    public void ResamplingRunsTheExpectedNetworkCalls()
    {
        var data = _ml.Data.LoadFromEnumerable(Rows(5));
        foreach (int resamplings in new[] { 1, 3 })
        {
            var options = Fast(resamplings);
            var transformer = _ml.Generative.Inpaint(_model, "Inpainted", "Image", "Mask", options).Fit(data);
            int calls = 0;
            transformer.NetworkOverride = (x, t) =>
            {
                calls++;
                return zeros_like(x);
            };
            var images = transformer.Transform(data).GetColumn<MLImage>("Inpainted").ToList();
            Assert.AreEqual(5, images.Count);
            // 5 rows in batches of 2: 3 batches, each running the whole jump schedule.
            int perBatch = 6 + (resamplings - 1) * 2 * 2;   // steps + (r - 1) j ceil((steps - j) / j)
            Assert.AreEqual(perBatch, RePaintSchedule.NetworkCalls(6, 2, resamplings));
            Assert.AreEqual(3 * perBatch, calls, $"resamplings {resamplings}");
        }
    }

    [TestMethod]
    public void SaveAndLoadGiveIdenticalOutput()
    {
        var data = _ml.Data.LoadFromEnumerable(Rows(3));
        var transformer = _ml.Generative.Inpaint(_model, "Inpainted", "Image", "Mask", Fast()).Fit(data);
        string path = Path.Combine(_dir, "inpaint.zip");
        _ml.Model.Save(transformer, data.Schema, path);
        var loaded = new MLContext().Model.Load(path, out var schema);
        Assert.IsInstanceOfType<InpaintingTransformer>(loaded);
        var l = (InpaintingTransformer)loaded;
        Assert.AreEqual("Mask", l.MaskColumnName);
        Assert.AreEqual(2, l.Options.JumpLength);
        Assert.AreEqual(_model.Config.Network, l.Model.Config.Network);
        var before = transformer.Transform(data).GetColumn<MLImage>("Inpainted").Select(TestData.Pixels).ToList();
        var after = loaded.Transform(data).GetColumn<MLImage>("Inpainted").Select(TestData.Pixels).ToList();
        for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(before[i], after[i], $"row {i}");
        l.Dispose();
    }

    [TestMethod]
    public void PredictionEngineEqualsTransform()
    {
        var rows = Rows(2);
        var data = _ml.Data.LoadFromEnumerable(rows);
        var transformer = _ml.Generative.Inpaint(_model, "Inpainted", "Image", "Mask", Fast()).Fit(data);
        var expected = transformer.Transform(data).GetColumn<MLImage>("Inpainted").Select(TestData.Pixels).First();
        var engine = _ml.Model.CreatePredictionEngine<MaskedRow, Output>(transformer);
        var first = TestData.Pixels(engine.Predict(rows[0]).Inpainted);
        CollectionAssert.AreEqual(expected, first);
        // Another input through the same engine gives another image (nothing is cached by position).
        var second = TestData.Pixels(engine.Predict(rows[1]).Inpainted);
        CollectionAssert.AreNotEqual(first, second);
    }

    [TestMethod]
    public void BadColumnsAreRejectedWithTheirNamesAndSizes()
    {
        var big = _ml.Data.LoadFromEnumerable(new[] { new TestData.Image16 { Image = TestData.Gray(16, (_, _) => 0) } });
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Inpaint(_model, "Inpainted", "Image", null, Fast()).Fit(big));
        StringAssert.Contains(e.Message, "'Image'");
        StringAssert.Contains(e.Message, "16x16");
        StringAssert.Contains(e.Message, "8x8");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() =>
            _ml.Generative.Inpaint(_model, "Inpainted", "Image", null, Fast()).GetOutputSchema(TestData.ShapeOf(big.Schema)));

        var noMask = _ml.Data.LoadFromEnumerable(TestData.Squares(2));
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Inpaint(_model, "Inpainted", "Image", "Mask", Fast()).Fit(noMask));
        StringAssert.Contains(e.Message, "'Mask'");
        StringAssert.Contains(e.Message, "not found");

        var shortMask = _ml.Data.LoadFromEnumerable(new[] { new ShortMaskRow { Image = TestData.Gray(8, (_, _) => 0) } });
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Inpaint(_model, "Inpainted", "Image", "Mask", Fast()).Fit(shortMask));
        StringAssert.Contains(e.Message, "'Mask'");
        StringAssert.Contains(e.Message, "10 values");
        StringAssert.Contains(e.Message, "64");

        var options = Fast();
        options.Steps = 51;
        var o = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Inpaint(_model, "Inpainted", "Image", null, options));
        StringAssert.Contains(o.Message, "Steps");
        StringAssert.Contains(o.Message, "50");
    }

    [TestMethod]
    public void ConditionalSuperResolutionModelIsRejected()
    {
        var options = TestData.TinyOptions(steps: 1);
        options.Conditioning = Conditioning.LowResolution(2);
        using var sr = _ml.Generative.Diffusion(options).Fit(_ml.Data.LoadFromEnumerable(TestData.Squares(8).ToList()));
        var e = Assert.ThrowsExactly<ArgumentException>(() => _ml.Generative.Inpaint(sr, "Inpainted", "Image", null, Fast()));
        StringAssert.Contains(e.Message, "LowResolution(2)");
        StringAssert.Contains(e.Message, "unconditional");
    }

    private sealed class ImageFile
    {
        public string Path { get; set; } = "";

        public uint Label { get; set; }
    }

    [TestMethod]
    public void ComposesWithLoadResizeAndGrayscale()
    {
        // Colour 16x16 PNGs, loaded, resized to the model's 8x8 and made grayscale, then inpainted with the built-in half mask.
        var files = new List<ImageFile>();
        for (int i = 0; i < 3; i++)
        {
            var px = new byte[4 * 16 * 16];
            for (int p = 0; p < 256; p++)
            {
                px[4 * p] = (byte)(p * 3 + i * 40);
                px[4 * p + 1] = (byte)(200 - p / 2);
                px[4 * p + 2] = (byte)(i * 70);
                px[4 * p + 3] = 255;
            }
            using var img = MLImage.CreateFromPixels(16, 16, MLPixelFormat.Bgra32, px);
            img.Save(Path.Combine(_dir, $"c{i}.png"));
            files.Add(new ImageFile { Path = $"c{i}.png", Label = (uint)i });
        }
        // A 10x10 file: LoadImages gives images of unknown size, checked row by row.
        using (var odd = TestData.Gray(10, (_, _) => 9)) odd.Save(Path.Combine(_dir, "odd.png"));

        var input = _ml.Data.LoadFromEnumerable(files);
        var options = Fast();
        options.Mask = InpaintMaskKind.Half;
        var pipeline = _ml.Transforms.LoadImages("Image", _dir, "Path")
            .Append(_ml.Transforms.ResizeImages("Image", 8, 8))
            .Append(_ml.Transforms.ConvertToGrayscale("Image"))
            .Append(_ml.Generative.Inpaint(_model, "Inpainted", "Image", null, options));
        var model = pipeline.Fit(input);
        var output = model.Transform(input);
        var gray = output.GetColumn<MLImage>("Image").Select(TestData.Pixels).ToList();
        var filled = output.GetColumn<MLImage>("Inpainted").ToList();
        Assert.AreEqual(3, filled.Count);
        var keep = InpaintMasks.Create(InpaintMaskKind.Half, 8);
        for (int r = 0; r < 3; r++)
        {
            Assert.AreEqual(8, filled[r].Width);
            var px = TestData.Pixels(filled[r]);
            for (int p = 0; p < 64; p++)
                if (keep[p]) Assert.IsTrue(Math.Abs(gray[r][4 * p] - px[4 * p]) <= 1, $"row {r}, pixel {p}: {gray[r][4 * p]} vs {px[4 * p]}");
        }

        // Without the resize, the first 16x16 row fails with the column, the row and both sizes.
        var unsized = _ml.Transforms.LoadImages("Image", _dir, "Path").Fit(input).Transform(input);
        var transformer = _ml.Generative.Inpaint(_model, "Inpainted", "Image", null, options).Fit(unsized);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => transformer.Transform(unsized).GetColumn<MLImage>("Inpainted").ToList());
        StringAssert.Contains(e.Message, "'Image', row 0");
        StringAssert.Contains(e.Message, "16x16");
        StringAssert.Contains(e.Message, "8x8");
    }
}
