using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Diffusion.Tests.Transforms;

/// <summary>Issue 15, item 9: color images into a grayscale model are an error naming the column, the 3 channels found and
/// the 1 expected, unless ConvertToGrayscale opts in to their luma; grayscale images pass either way.</summary>
[TestClass]
public class GrayscaleInputTests
{
    private static TestModel _fixture = null!;

    [ClassInitialize]
    public static void Init(TestContext _) => _fixture = TestModel.Shared("diffusion-grayscale");

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    /// <summary>An 8x8 image with a red square (R 230, G 20, B 20) on a gray background.</summary>
    private static MLImage Color(int seed)
    {
        var px = new byte[4 * 64];
        for (int p = 0; p < 64; p++)
        {
            bool square = p % 8 >= seed % 4 && p % 8 < seed % 4 + 3 && p / 8 < 3;
            px[4 * p] = square ? (byte)20 : (byte)90;       // B
            px[4 * p + 1] = square ? (byte)20 : (byte)90;   // G
            px[4 * p + 2] = square ? (byte)230 : (byte)90;  // R
            px[4 * p + 3] = 255;
        }
        return MLImage.CreateFromPixels(8, 8, MLPixelFormat.Bgra32, px);
    }

    private static IDataView ColorRows(MLContext ml, int count = 8) =>
        ml.Data.LoadFromEnumerable(Enumerable.Range(0, count).Select(i => new TestData.Image8 { Image = Color(i) }).ToList());

    private static void AssertNamesTheProblem(Exception e, string option)
    {
        StringAssert.Contains(e.Message, "Column 'Image'");
        StringAssert.Contains(e.Message, "3 channels");
        StringAssert.Contains(e.Message, "expects 1 channel");
        StringAssert.Contains(e.Message, "ConvertToGrayscale(\"Image\")");
        StringAssert.Contains(e.Message, option);
    }

    [TestMethod]
    public void TrainingAGrayscaleModelOnColorImagesFailsUnlessConverted()
    {
        var ml = new MLContext(seed: 1);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Generative.Diffusion(TestData.TinyOptions(steps: 1)).Fit(ColorRows(ml)));
        AssertNamesTheProblem(e, "DiffusionTrainer.Options.ConvertToGrayscale");

        var options = TestData.TinyOptions(steps: 1);
        options.ConvertToGrayscale = true;
        using var model = ml.Generative.Diffusion(options).Fit(ColorRows(ml));
        Assert.AreEqual(1, model.Channels);

        // ML.NET's ConvertToGrayscale, as the message suggests, makes the same data acceptable.
        var pipeline = ml.Transforms.ConvertToGrayscale("Image").Append(ml.Generative.Diffusion(TestData.TinyOptions(steps: 1)));
        using var viaTransform = pipeline.Fit(ColorRows(ml)).LastTransformer;
    }

    [TestMethod]
    public void ExtractPixelsOfColorImagesFailsUnlessConverted()
    {
        var ml = new MLContext(seed: 1);
        // ExtractPixels disposes the images it reads: a fresh view for each pass.
        IDataView Pixels(IDataView images) => ml.Transforms.ExtractPixels("Pixels", "Image").Fit(images).Transform(images);
        var options = TestData.TinyOptions(steps: 1);
        options.ImageColumnName = "Pixels";
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Generative.Diffusion(options).Fit(Pixels(ColorRows(ml))));
        StringAssert.Contains(e.Message, "Column 'Pixels'");
        StringAssert.Contains(e.Message, "3 channels");
        StringAssert.Contains(e.Message, "DiffusionTrainer.Options.ConvertToGrayscale");

        options.ConvertToGrayscale = true;
        using var model = ml.Generative.Diffusion(options).Fit(Pixels(ColorRows(ml)));
        // Gray images give three equal planes: accepted without the option.
        options.ConvertToGrayscale = false;
        using var fromGray = ml.Generative.Diffusion(options).Fit(Pixels(ml.Data.LoadFromEnumerable(TestData.Squares(8).ToList())));
    }

    private static InpaintOptions Fast(bool convert) =>
        new() { Steps = 2, JumpLength = 1, Resamplings = 1, BatchSize = 4, ConvertToGrayscale = convert };

    private static MLImage[] Inpainted(IDataView output) =>
        output.GetColumn<MLImage>("Inpainted").ToArray();

    [TestMethod]
    public void InpaintingColorImagesWithAGrayscaleModelFailsUnlessConverted()
    {
        var ml = _fixture.Ml;
        var model = _fixture.Model;
        var inpaint = ml.Generative.Inpaint(model, "Inpainted", "Image", null, Fast(convert: false));
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => Inpainted(inpaint.Fit(ColorRows(ml, 2)).Transform(ColorRows(ml, 2))));
        AssertNamesTheProblem(e, "InpaintOptions.ConvertToGrayscale");

        var converted = ml.Generative.Inpaint(model, "Inpainted", "Image", null, Fast(convert: true)).Fit(ColorRows(ml, 2));
        Assert.AreEqual(2, Inpainted(converted.Transform(ColorRows(ml, 2))).Length);
        var viaTransform = ml.Transforms.ConvertToGrayscale("Image").Append(inpaint).Fit(ColorRows(ml, 2));
        Assert.AreEqual(2, Inpainted(viaTransform.Transform(ColorRows(ml, 2))).Length);

        // The option is saved with the transformer.
        string path = Path.Combine(_fixture.Directory, "inpaint-convert.zip");
        ml.Model.Save(converted, _fixture.Data.Schema, path);
        using var loaded = (InpaintingTransformer)new MLContext().Model.Load(path, out _);
        Assert.IsTrue(loaded.Options.ConvertToGrayscale);
    }

    [TestMethod]
    public void UpscalingColorImagesWithAGrayscaleModelFailsUnlessConverted()
    {
        var ml = _fixture.Ml;
        var small = ml.Transforms.ResizeImages("Image", 4, 4).Fit(ColorRows(ml, 2));
        var upscale = ml.Generative.Upscale(_fixture.Model, "Upscaled", "Image",
            new UpscaleOptions { Factor = 2, Steps = 2, JumpLength = 1, Resamplings = 1 });
        var e = Assert.ThrowsExactly<InvalidOperationException>(() =>
            upscale.Fit(small.Transform(ColorRows(ml, 2))).Transform(small.Transform(ColorRows(ml, 2))).GetColumn<MLImage>("Upscaled").ToArray());
        StringAssert.Contains(e.Message, "UpscaleOptions.ConvertToGrayscale");
    }
}
