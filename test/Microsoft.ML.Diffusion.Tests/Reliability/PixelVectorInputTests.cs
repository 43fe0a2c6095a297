using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Diffusion.Tests.Reliability;

/// <summary>
/// DiffusionTrainer composes with ML.NET's ExtractPixels: with its defaults ExtractPixels writes Vector&lt;Single, 3, H, W&gt;
/// (planar R, G, B, values 0..255; 3 planes for grayscale images too), and training on that column gives bit-identical weights
/// to training on the MLImage column it came from, for 1 and 3 channels.
/// </summary>
[TestClass]
public class PixelVectorInputTests
{
    private static string _dir = null!;
    private static List<ImageFile> _files = null!;

    [ClassInitialize]
    public static void WriteImages(TestContext _)
    {
        // 16 coloured 8x8 PNGs: a square of one colour at a random place on a background of another.
        _dir = TestData.TempDirectory("diffusion-pixels");
        _files = new List<ImageFile>();
        var rng = new Random(4);
        for (int i = 0; i < 16; i++)
        {
            int ox = rng.Next(0, 5), oy = rng.Next(0, 5);
            var px = new byte[4 * 64];
            for (int p = 0; p < 64; p++)
            {
                bool inside = p % 8 >= ox && p % 8 < ox + 3 && p / 8 >= oy && p / 8 < oy + 3;
                (px[4 * p], px[4 * p + 1], px[4 * p + 2]) = inside ? ((byte)40, (byte)(120 + i), (byte)230) : ((byte)100, (byte)60, (byte)(20 + i));   // B, G, R
                px[4 * p + 3] = 255;
            }
            using var image = MLImage.CreateFromPixels(8, 8, MLPixelFormat.Bgra32, px);
            image.Save(Path.Combine(_dir, $"{i}.png"));
            _files.Add(new ImageFile { Path = $"{i}.png" });
        }
    }

    [ClassCleanup]
    public static void Cleanup() => Directory.Delete(_dir, true);

    private static IDataView Images(MLContext ml)
    {
        var files = ml.Data.LoadFromEnumerable(_files);
        return ml.Transforms.LoadImages("Image", _dir, "Path").Append(ml.Transforms.ResizeImages("Image", 8, 8)).Fit(files).Transform(files);
    }

    private static IDataView Pixels(MLContext ml, ImagePixelExtractingEstimator.ColorBits colors = ImagePixelExtractingEstimator.ColorBits.Rgb,
        ImagePixelExtractingEstimator.ColorsOrder order = ImagePixelExtractingEstimator.ColorsOrder.ARGB)
    {
        var files = ml.Data.LoadFromEnumerable(_files);
        return ml.Transforms.LoadImages("Image", _dir, "Path").Append(ml.Transforms.ResizeImages("Image", 8, 8))
            .Append(ml.Transforms.ExtractPixels("Pixels", "Image", colorsToExtract: colors, orderOfExtraction: order)).Fit(files).Transform(files);
    }

    [TestMethod]
    public void ExtractPixelsDefaultsArePlanarRgbFrom0To255()
    {
        var ml = new MLContext();
        var pixels = Pixels(ml);
        var type = (VectorDataViewType)pixels.Schema["Pixels"].Type;
        CollectionAssert.AreEqual(new[] { 3, 8, 8 }, type.Dimensions.ToArray());
        var first = pixels.GetColumn<VBuffer<float>>("Pixels").First().DenseValues().ToArray();
        using var image = MLImage.CreateFromFile(Path.Combine(_dir, "0.png"));
        var bgra = image.Pixels.ToArray();
        for (int p = 0; p < 64; p++)
        {
            Assert.AreEqual(bgra[4 * p + 2], first[p], $"R of pixel {p}");
            Assert.AreEqual(bgra[4 * p + 1], first[64 + p], $"G of pixel {p}");
            Assert.AreEqual(bgra[4 * p], first[128 + p], $"B of pixel {p}");
        }
    }

    [TestMethod]
    [DataRow(1)]
    [DataRow(3)]
    public void TrainingOnExtractPixelsGivesTheWeightsOfTrainingOnTheImages(int channels)
    {
        using var threads = ReliabilityKit.OneTorchThread();
        byte[] Train(Func<MLContext, IDataView> data, string column)
        {
            var ml = new MLContext(seed: 5);
            var options = TestData.TinyOptions(steps: 3);
            options.Channels = channels;
            options.ImageColumnName = column;
            options.ConvertToGrayscale = true;   // color images: Channels = 1 trains on their luma
            // TinyOptions' explicit Seed: with Seed = null the seed would come from the MLContext, whose random stream the
            // extra ExtractPixels estimator advances (ML.NET gives each registered component a seed of its own).
            var view = data(ml);
            using var model = ml.Generative.Diffusion(options).Fit(view);
            return ReliabilityKit.WeightBytes(ml, model);
        }
        var fromImages = Train(Images, "Image");
        var fromPixels = Train(ml => Pixels(ml), "Pixels");
        CollectionAssert.AreEqual(fromImages, fromPixels, $"Channels = {channels}: ExtractPixels and MLImage training differ");
        // The comparison can fail: other pixels give other weights.
        var other = channels == 1
            ? Train(ml => Pixels(ml, ImagePixelExtractingEstimator.ColorBits.Red), "Pixels")                          // the red plane instead of the luma
            : Train(ml => Pixels(ml, order: ImagePixelExtractingEstimator.ColorsOrder.ABGR), "Pixels");               // B, G, R instead of R, G, B
        CollectionAssert.AreNotEqual(fromImages, other, "other pixel values should give other weights");
    }

    [TestMethod]
    public void TheEstimatorAcceptsAPixelVectorShape()
    {
        var ml = new MLContext();
        var options = TestData.TinyOptions();
        options.ImageColumnName = "Pixels";
        var shape = ml.Generative.Diffusion(options).GetOutputSchema(TestData.ShapeOf(Pixels(ml).Schema));
        Assert.IsInstanceOfType<ImageDataViewType>(shape.Single(c => c.Name == "GeneratedImage").ItemType);
    }

    private sealed class ImageFile
    {
        public string Path { get; set; } = "";
    }
}
