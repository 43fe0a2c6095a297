using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Diffusion.Tests.Training;

/// <summary>Issue 15, item 3: the attention resolutions follow the image size unless set, so the flat overload trains any
/// size that halves evenly; explicit settings and the 28-pixel default ({ 7 }) are unchanged.</summary>
[TestClass]
public class AttentionDefaultTests
{
    private sealed class Image16 { [ImageType(16, 16)] public MLImage Image { get; set; } = null!; }
    private sealed class Image28 { [ImageType(28, 28)] public MLImage Image { get; set; } = null!; }
    private sealed class Image32 { [ImageType(32, 32)] public MLImage Image { get; set; } = null!; }

    private static IDataView Data(MLContext ml, int size)
    {
        var images = Enumerable.Range(0, 4).Select(i => TestData.Gray(size, (x, y) => (byte)((x + y + 7 * i) % 256))).ToList();
        return size switch
        {
            16 => ml.Data.LoadFromEnumerable(images.Select(im => new Image16 { Image = im }).ToList()),
            28 => ml.Data.LoadFromEnumerable(images.Select(im => new Image28 { Image = im }).ToList()),
            _ => ml.Data.LoadFromEnumerable(images.Select(im => new Image32 { Image = im }).ToList()),
        };
    }

    [TestMethod]
    [DataRow(16, 4)]
    [DataRow(28, 7)]
    [DataRow(32, 8)]
    public void FlatOverloadFitsAnyEvenSizeWithAttentionAtTheLowestResolution(int size, int expected)
    {
        var ml = new MLContext(seed: 1);
        using var model = ml.Generative.Diffusion(imageSize: size, batchSize: 4, timesteps: 20).Fit(Data(ml, size));
        CollectionAssert.AreEqual(new[] { expected }, model.Config.Network.AttentionResolutions);
    }

    [TestMethod]
    public void DefaultsFollowTheLowestResolution()
    {
        CollectionAssert.AreEqual(new[] { 7 }, DiffusionDefaults.AttentionResolutions);
        CollectionAssert.AreEqual(new[] { 8 }, UNetConfig.DefaultAttentionResolutions(32, new[] { 1, 2, 2 }));
        CollectionAssert.AreEqual(new[] { 4 }, UNetConfig.DefaultAttentionResolutions(16, new[] { 1, 2, 2 }));
        CollectionAssert.AreEqual(new[] { 16 }, UNetConfig.DefaultAttentionResolutions(64, new[] { 1, 2, 2 }));
        CollectionAssert.AreEqual(Array.Empty<int>(), UNetConfig.DefaultAttentionResolutions(256, new[] { 1, 2 }));   // 128 x 128: too costly
        CollectionAssert.AreEqual(Array.Empty<int>(), UNetConfig.DefaultAttentionResolutions(30, new[] { 1, 2, 2 })); // does not halve evenly
        var options = new DiffusionTrainer.Options();
        Assert.IsNull(options.AttentionResolutions);
        CollectionAssert.AreEqual(new[] { 7 }, options.ResolveAttentionResolutions());
        CollectionAssert.AreEqual(new[] { 8 }, new DiffusionTrainer.Options { ImageSize = 32 }.ResolveAttentionResolutions());
    }

    [TestMethod]
    public void TheBundledModelHasTheDefaultNetwork()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null && !File.Exists(Path.Combine(dir.FullName, "Diffusion.MLNet.sln"))) dir = dir.Parent;
        Assert.IsNotNull(dir);
        string path = Path.Combine(dir.FullName, "src", "Samples", "Models", "fashion-mnist-ddpm.zip");
        using var bundled = new MLContext().Generative.LoadDiffusionModel(path);
        CollectionAssert.AreEqual(new[] { 7 }, bundled.Config.Network.AttentionResolutions);
        CollectionAssert.AreEqual(bundled.Config.Network.AttentionResolutions, new DiffusionTrainer.Options().ResolveAttentionResolutions());
    }

    [TestMethod]
    public void ExplicitAttentionResolutionsAreKept()
    {
        var ml = new MLContext(seed: 1);
        var options = new DiffusionTrainer.Options { ImageSize = 16, AttentionResolutions = new[] { 8 }, BatchSize = 4, Timesteps = 20 };
        using var model = ml.Generative.Diffusion(options).Fit(Data(ml, 16));
        CollectionAssert.AreEqual(new[] { 8 }, model.Config.Network.AttentionResolutions);
        var none = new DiffusionTrainer.Options { ImageSize = 16, AttentionResolutions = Array.Empty<int>() };
        CollectionAssert.AreEqual(Array.Empty<int>(), none.ResolveAttentionResolutions());
    }

    [TestMethod]
    public void AnUnreachableResolutionNamesTheTrainerOption()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
            new MLContext().Generative.Diffusion(new DiffusionTrainer.Options { ImageSize = 32, AttentionResolutions = new[] { 7 } }));
        StringAssert.Contains(e.Message, "DiffusionTrainer.Options.AttentionResolutions");
        StringAssert.Contains(e.Message, "32, 16, 8");
        StringAssert.Contains(e.Message, "null");
    }
}
