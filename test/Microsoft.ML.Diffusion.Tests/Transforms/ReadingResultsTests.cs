using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Diffusion.Tests.Transforms;

/// <summary>Issue 15, item 6 (README "Reading results"): every cursor samples again but gives the same images, because each
/// row's seed fixes its noise; ml.Data.Cache drops image columns (ML.NET's limit); the README's two ways around it work.</summary>
[TestClass]
public class ReadingResultsTests
{
    private static TestModel _fixture = null!;

    [ClassInitialize]
    public static void Init(TestContext _) => _fixture = TestModel.Shared("diffusion-reading");

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    private sealed class Generated8
    {
        [ImageType(8, 8)]
        public MLImage GeneratedImage { get; set; } = null!;
    }

    private static byte[][] Pixels(IDataView view, string column) =>
        view.GetColumn<MLImage>(column).Select(TestData.Pixels).ToArray();

    [TestMethod]
    public void TwoCursorsOverGenerationGiveTheSameImages()
    {
        var ml = _fixture.Ml;
        var generated = _fixture.Model.Transform(ml.Generative.CreateRequests(count: 3, seed: 7));
        var first = Pixels(generated, "GeneratedImage");
        var second = Pixels(generated, "GeneratedImage");
        for (int i = 0; i < first.Length; i++) CollectionAssert.AreEqual(first[i], second[i], $"row {i}");
    }

    [TestMethod]
    public void TwoCursorsOverInpaintingGiveTheSameImages()
    {
        var ml = _fixture.Ml;
        var data = ml.Data.LoadFromEnumerable(TestData.Squares(2).ToList());
        var filled = ml.Generative.Inpaint(_fixture.Model, "Inpainted", "Image", null,
            new InpaintOptions { Steps = 3, JumpLength = 1, Resamplings = 1, Seed = 5 }).Fit(data).Transform(data);
        var first = Pixels(filled, "Inpainted");
        var second = Pixels(filled, "Inpainted");
        for (int i = 0; i < first.Length; i++) CollectionAssert.AreEqual(first[i], second[i], $"row {i}");
    }

    [TestMethod]
    public void CacheDropsImageColumnsAndTheReadmeWorkaroundsKeepThem()
    {
        var ml = _fixture.Ml;
        var requests = ml.Generative.CreateRequests(count: 3, seed: 7);
        var generated = _fixture.Model.Transform(requests);
        var expected = Pixels(generated, "GeneratedImage");

        // ML.NET's limit, which the README describes: the cached view has no image column.
        Assert.IsNull(ml.Data.Cache(generated).Schema.GetColumnOrNull("GeneratedImage"));

        // Workaround 1: materialise once (CreateEnumerable into a List), then read as often as needed.
        var rows = ml.Data.CreateEnumerable<Generated8>(generated, reuseRowObject: false).ToList();
        IDataView once = ml.Data.LoadFromEnumerable(rows);
        for (int i = 0; i < rows.Count; i++) CollectionAssert.AreEqual(expected[i], TestData.Pixels(rows[i].GeneratedImage));
        Assert.AreEqual(3, once.GetColumn<MLImage>("GeneratedImage").Count());

        // Workaround 2: pixels as floats, which Cache keeps.
        var pixels = ml.Transforms.ExtractPixels("Pixels", "GeneratedImage").Fit(generated).Transform(generated);
        var cached = ml.Data.Cache(pixels, "Pixels");
        Assert.IsNotNull(cached.Schema.GetColumnOrNull("Pixels"));
        var values = cached.GetColumn<VBuffer<float>>("Pixels").Select(v => v.DenseValues().ToArray()).ToList();
        Assert.AreEqual(3, values.Count);
        Assert.AreEqual(expected[0][2], (byte)values[0][0], "the red value of the first pixel");
    }
}
