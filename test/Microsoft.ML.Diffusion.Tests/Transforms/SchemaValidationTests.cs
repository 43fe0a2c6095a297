using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Diffusion.Tests.Transforms;

/// <summary>Bad input fails with errors that name the column, what was found and what was expected.</summary>
[TestClass]
public class SchemaValidationTests
{
    private static readonly MLContext Ml = new(seed: 1);

    [TestMethod]
    public void MissingImageColumnIsNamed()
    {
        var data = Ml.Data.LoadFromEnumerable(TestData.Squares(8));
        var options = TestData.TinyOptions();
        options.ImageColumnName = "Picture";
        var trainer = Ml.Generative.Diffusion(options);
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => trainer.Fit(data));
        StringAssert.Contains(e.Message, "'Picture'");
        StringAssert.Contains(e.Message, "not found");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => trainer.GetOutputSchema(TestData.ShapeOf(data.Schema)));
    }

    [TestMethod]
    public void WrongColumnTypeIsNamed()
    {
        var data = Ml.Data.LoadFromEnumerable(new[] { new TestData.IntRow() });
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Ml.Generative.Diffusion(TestData.TinyOptions()).Fit(data));
        StringAssert.Contains(e.Message, "'Image'");
        StringAssert.Contains(e.Message, "Vector<Int32, 64>");
        StringAssert.Contains(e.Message, "expected an image");
    }

    [TestMethod]
    public void WrongImageSizeInSchemaSuggestsResize()
    {
        var data = Ml.Data.LoadFromEnumerable(new[] { new TestData.Image16 { Image = TestData.Gray(16, (_, _) => 0) } });
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Ml.Generative.Diffusion(TestData.TinyOptions()).Fit(data));
        StringAssert.Contains(e.Message, "16x16");
        StringAssert.Contains(e.Message, "expected 8x8");
        StringAssert.Contains(e.Message, "ResizeImages");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() =>
            Ml.Generative.Diffusion(TestData.TinyOptions()).GetOutputSchema(TestData.ShapeOf(data.Schema)));
    }

    [TestMethod]
    public void WrongImageSizeAtRunTimeNamesTheRow()
    {
        // LoadImages yields images of unknown size (ImageDataViewType 0x0): checked row by row.
        string dir = Path.Combine(Path.GetTempPath(), "diffusion-images-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var files = new List<ImageFile>();
            int i = 0;
            foreach (var row in TestData.Squares(8))
            {
                if (i == 3)
                {
                    using var big = TestData.Gray(10, (_, _) => 0);
                    big.Save(Path.Combine(dir, "big.png"));
                    files.Add(new ImageFile { Path = "big.png" });
                }
                row.Image.Save(Path.Combine(dir, $"{i}.png"));
                files.Add(new ImageFile { Path = $"{i++}.png" });
            }
            var data = Ml.Transforms.LoadImages("Image", dir, "Path").Fit(Ml.Data.LoadFromEnumerable(files))
                .Transform(Ml.Data.LoadFromEnumerable(files));
            var options = TestData.TinyOptions();
            options.ShuffleBufferSize = 1;
            var e = Assert.ThrowsExactly<InvalidOperationException>(() => Ml.Generative.Diffusion(options).Fit(data));
            StringAssert.Contains(e.Message, "'Image', row 3");
            StringAssert.Contains(e.Message, "10x10");
            StringAssert.Contains(e.Message, "expected 8x8");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private sealed class ImageFile
    {
        public string Path { get; set; } = "";
    }

    [TestMethod]
    public void EmptyInputAndTooFewRowsAreRejected()
    {
        var empty = Ml.Data.LoadFromEnumerable(Array.Empty<TestData.Image8>());
        var e1 = Assert.ThrowsExactly<InvalidOperationException>(() => Ml.Generative.Diffusion(TestData.TinyOptions()).Fit(empty));
        StringAssert.Contains(e1.Message, "no rows");
        var few = Ml.Data.LoadFromEnumerable(TestData.Squares(3));
        var e2 = Assert.ThrowsExactly<InvalidOperationException>(() => Ml.Generative.Diffusion(TestData.TinyOptions()).Fit(few));
        StringAssert.Contains(e2.Message, "3 rows");
        StringAssert.Contains(e2.Message, "BatchSize = 8");
    }

    [TestMethod]
    public void InvalidOptionsAreRejected()
    {
        var o = TestData.TinyOptions();
        o.Channels = 2;
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Ml.Generative.Diffusion(o));
        StringAssert.Contains(e.Message, "Channels");
        o = TestData.TinyOptions();
        o.BatchSize = 0;
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Ml.Generative.Diffusion(o));
        o = TestData.TinyOptions();
        o.ImageSize = 10; // not divisible by 2 for two levels with attention at 4
        Assert.Throws<ArgumentException>(() => Ml.Generative.Diffusion(o));
    }

    [TestMethod]
    public void OutputSchemaShapeAddsTheImageColumn()
    {
        var data = Ml.Data.LoadFromEnumerable(TestData.Squares(8));
        var shape = Ml.Generative.Diffusion(TestData.TinyOptions()).GetOutputSchema(TestData.ShapeOf(data.Schema));
        var col = shape.Single(c => c.Name == "GeneratedImage");
        Assert.IsInstanceOfType<ImageDataViewType>(col.ItemType);
        Assert.AreEqual(8, ((ImageDataViewType)col.ItemType).Height);
        Assert.IsTrue(shape.Any(c => c.Name == "Image"));
    }
}
