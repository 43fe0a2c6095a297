using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Imaging;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Imaging;

[TestClass]
public class ImageTensorConverterTests
{
    [TestMethod]
    public void GrayImageMapsToMinusOneToOneAndBack()
    {
        using var img = TestData.Gray(4, (x, y) => (byte)(x * 60 + y));
        var chw = new float[16];
        ImageTensorConverter.ToChw(img, 1, chw);
        Assert.AreEqual(0 / 127.5f - 1f, chw[0], 1e-6f);              // pixel (0,0) = 0
        Assert.AreEqual((3 * 60 + 2) / 127.5f - 1f, chw[2 * 4 + 3], 1e-5f); // pixel (3,2)
        using var t = tensor(chw, new long[] { 1, 1, 4, 4 });
        var back = ImageTensorConverter.ToBgraPixels(t)[0];
        CollectionAssert.AreEqual(TestData.Pixels(img), back);
    }

    [TestMethod]
    public void RgbChannelsAreRedGreenBlueFromBgra()
    {
        var px = new byte[] { 10, 20, 30, 255 }; // B, G, R, A
        using var img = MLImage.CreateFromPixels(1, 1, MLPixelFormat.Bgra32, px);
        var chw = new float[3];
        ImageTensorConverter.ToChw(img, 3, chw);
        Assert.AreEqual(30 / 127.5f - 1f, chw[0], 1e-6f);
        Assert.AreEqual(20 / 127.5f - 1f, chw[1], 1e-6f);
        Assert.AreEqual(10 / 127.5f - 1f, chw[2], 1e-6f);
        var gray = new float[1];
        ImageTensorConverter.ToChw(img, 1, gray);
        Assert.AreEqual((0.299f * 30 + 0.587f * 20 + 0.114f * 10) / 127.5f - 1f, gray[0], 1e-5f);
    }

    [TestMethod]
    public void ToByteRoundsAndClamps()
    {
        Assert.AreEqual((byte)0, ImageTensorConverter.ToByte(-1.5f));
        Assert.AreEqual((byte)255, ImageTensorConverter.ToByte(1.2f));
        Assert.AreEqual((byte)128, ImageTensorConverter.ToByte(0.004f)); // (1.004)*127.5 = 128.01
        Assert.AreEqual((byte)0, ImageTensorConverter.ToByte(float.NaN));
    }

    [TestMethod]
    public void GridTilesImagesWithPadding()
    {
        var images = Enumerable.Range(0, 5).Select(i => TestData.Gray(2, (_, _) => (byte)(50 * i))).ToArray();
        using var grid = ImageGrid.Create(images, padding: 1);
        // 5 images -> 3 columns x 2 rows of 2x2 tiles with 1 pixel padding.
        Assert.AreEqual(3 * 2 + 4, grid.Width);
        Assert.AreEqual(2 * 2 + 3, grid.Height);
        var px = grid.Pixels.ToArray();
        int At(int x, int y) => px[4 * (y * grid.Width + x)];
        Assert.AreEqual(0, At(0, 0));          // padding
        Assert.AreEqual(50, At(4, 1));         // image 1 at column 1: x0 = 1 + 3
        Assert.AreEqual(200, At(4, 4));        // image 4 at row 1, column 1: y0 = 1 + 3
        foreach (var i in images) i.Dispose();
    }
}
