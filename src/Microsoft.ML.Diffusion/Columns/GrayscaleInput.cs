using System.Globalization;
using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion.Columns;

/// <summary>
/// The check that keeps color images out of grayscale (Channels = 1) models unless the user opts in: an image whose three
/// channels differ somewhere is a color image, and converting it to luma silently would train or fill with other data than the
/// user gave. Images whose channels are equal everywhere (grayscale images, which MLImage stores as Bgra32, and ExtractPixels'
/// three equal planes of them) pass.
/// </summary>
internal static class GrayscaleInput
{
    /// <summary>Throws when <paramref name="image"/> has a pixel whose R, G and B differ.</summary>
    /// <param name="image">A Bgra32 or Rgba32 image.</param>
    /// <param name="column">The column, for the message.</param>
    /// <param name="row">The row, for the message.</param>
    /// <param name="option">The opt-in option's full name (e.g. "DiffusionTrainer.Options.ConvertToGrayscale").</param>
    public static void CheckImage(MLImage image, string column, long row, string option)
    {
        ReadOnlySpan<byte> px = image.Pixels;
        bool bgra = image.PixelFormat == MLPixelFormat.Bgra32;
        int ri = bgra ? 2 : 0, bi = bgra ? 0 : 2;
        int n = image.Width * image.Height;
        for (int p = 0; p < n; p++)
        {
            byte r = px[4 * p + ri], g = px[4 * p + 1], b = px[4 * p + bi];
            if (r != g || g != b)
                throw Error(column, row, p % image.Width, p / image.Width, r, g, b, option);
        }
    }

    /// <summary>Throws when three planes of pixel values (ExtractPixels' layout) differ at some pixel.</summary>
    public static void CheckPlanes(ReadOnlySpan<float> pixels, int size, string column, long row, string option)
    {
        int plane = size * size;
        for (int p = 0; p < plane; p++)
        {
            float r = pixels[p], g = pixels[plane + p], b = pixels[2 * plane + p];
            if (r != g || g != b)
                throw Error(column, row, p % size, p / size, r, g, b, option);
        }
    }

    private static InvalidOperationException Error(string column, long row, int x, int y, float r, float g, float b, string option) =>
        new(Message(column, row, x, y, r.ToString(CultureInfo.InvariantCulture), g.ToString(CultureInfo.InvariantCulture),
            b.ToString(CultureInfo.InvariantCulture), option));

    private static string Message(string column, long row, int x, int y, string r, string g, string b, string option) =>
            $"Column '{column}', row {row}: the image has 3 channels (color: the pixel at x {x}, y {y} is R {r}, G {g}, B {b}); the model " +
            $"is grayscale (Channels = 1) and expects 1 channel (R = G = B everywhere). Add mlContext.Transforms.ConvertToGrayscale(\"{column}\") " +
            $"before this step (before ExtractPixels for a pixel vector), or set {option} = true to convert color images to their luma " +
            "(ITU-R BT.601) here. To keep the colors, use a model trained with Channels = 3.";
}
