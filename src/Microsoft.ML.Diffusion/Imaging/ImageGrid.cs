using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion;

/// <summary>Tiles equally sized images into one image (a sample grid, as in the papers' figures).</summary>
public static class ImageGrid
{
    /// <summary>
    /// Tiles <paramref name="images"/> row by row. <paramref name="columns"/> defaults to ceil(sqrt(n)) (a square-ish
    /// grid); <paramref name="padding"/> pixels of <paramref name="background"/> grey separate the tiles.
    /// </summary>
    public static MLImage Create(IReadOnlyList<MLImage> images, int? columns = null, int padding = 2, byte background = 0)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.Count == 0) throw new ArgumentException("No images to tile.", nameof(images));
        if (padding < 0) throw new ArgumentOutOfRangeException(nameof(padding), padding, "Padding must be >= 0.");
        int n = images.Count;
        int cols = columns ?? (int)Math.Ceiling(Math.Sqrt(n));
        if (cols <= 0) throw new ArgumentOutOfRangeException(nameof(columns), columns, "Columns must be >= 1.");
        int rows = (n + cols - 1) / cols;
        int tw = images[0].Width, th = images[0].Height;
        int width = cols * tw + (cols + 1) * padding, height = rows * th + (rows + 1) * padding;
        var px = new byte[4 * width * height];
        for (int i = 0; i < px.Length; i += 4)
        {
            px[i] = px[i + 1] = px[i + 2] = background;
            px[i + 3] = 255;
        }
        for (int k = 0; k < n; k++)
        {
            var img = images[k];
            if (img.Width != tw || img.Height != th)
                throw new ArgumentException($"Image {k} is {img.Width}x{img.Height}; expected {tw}x{th} like image 0.", nameof(images));
            bool bgra = img.PixelFormat == MLPixelFormat.Bgra32;
            ReadOnlySpan<byte> src = img.Pixels;
            int x0 = padding + (k % cols) * (tw + padding), y0 = padding + (k / cols) * (th + padding);
            for (int y = 0; y < th; y++)
                for (int x = 0; x < tw; x++)
                {
                    int s = 4 * (y * tw + x), d = 4 * ((y0 + y) * width + x0 + x);
                    px[d] = bgra ? src[s] : src[s + 2];
                    px[d + 1] = src[s + 1];
                    px[d + 2] = bgra ? src[s + 2] : src[s];
                    px[d + 3] = src[s + 3];
                }
        }
        return MLImage.CreateFromPixels(width, height, MLPixelFormat.Bgra32, px);
    }
}
