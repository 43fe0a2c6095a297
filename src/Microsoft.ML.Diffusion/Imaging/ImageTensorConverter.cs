using Microsoft.ML.Data;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Imaging;

/// <summary>
/// Converts between <see cref="MLImage"/> pixels and the network's value range: channel-first float
/// values in [-1, 1] (DDPM section 4: "data scaled linearly to [-1, 1]").
/// </summary>
internal static class ImageTensorConverter
{
    /// <summary>
    /// Writes one image as <paramref name="channels"/> planes of height x width floats in [-1, 1] into
    /// <paramref name="destination"/>. One channel is ITU-R BT.601 luma (an image whose channels are equal
    /// keeps its value); three channels are R, G, B.
    /// </summary>
    public static void ToChw(MLImage image, int channels, Span<float> destination)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (channels != 1 && channels != 3)
            throw new ArgumentOutOfRangeException(nameof(channels), channels, "Channels must be 1 (grayscale) or 3 (RGB).");
        int plane = image.Width * image.Height;
        if (destination.Length < channels * plane)
            throw new ArgumentException($"Destination holds {destination.Length} values; {channels * plane} needed.", nameof(destination));

        ReadOnlySpan<byte> pixels = image.Pixels;
        // Bgra32 and Rgba32 are the formats MLImage holds; 4 bytes a pixel.
        bool bgra = image.PixelFormat == MLPixelFormat.Bgra32;
        if (!bgra && image.PixelFormat != MLPixelFormat.Rgba32)
            throw new NotSupportedException($"Pixel format {image.PixelFormat} is not supported; expected Bgra32 or Rgba32.");
        int ri = bgra ? 2 : 0, bi = bgra ? 0 : 2;
        for (int p = 0; p < plane; p++)
        {
            float r = pixels[4 * p + ri], g = pixels[4 * p + 1], b = pixels[4 * p + bi];
            if (channels == 1)
            {
                float y = 0.299f * r + 0.587f * g + 0.114f * b;
                destination[p] = y / 127.5f - 1f;
            }
            else
            {
                destination[p] = r / 127.5f - 1f;
                destination[plane + p] = g / 127.5f - 1f;
                destination[2 * plane + p] = b / 127.5f - 1f;
            }
        }
    }

    /// <summary>
    /// Converts one image given as planar pixel values 0..255 (ExtractPixels' default layout: <paramref name="planes"/> planes of
    /// size x size, R then G then B) to <paramref name="channels"/> planes of [-1, 1] floats, with the same arithmetic as
    /// <see cref="ToChw"/> (3 planes to 1 channel: BT.601 luma), so both inputs give identical values. Throws
    /// <see cref="InvalidOperationException"/> naming <paramref name="column"/>, <paramref name="row"/>, the position and the
    /// value when a value is NaN, infinite or outside [0, 255].
    /// </summary>
    internal static void PlanarPixelsToChw(ReadOnlySpan<float> pixels, int planes, int size, int channels, Span<float> destination, string column, long row)
    {
        int plane = size * size;
        for (int i = 0; i < planes * plane; i++)
        {
            float v = pixels[i];
            if (!(v >= 0f && v <= 255f))   // false for NaN too
            {
                int p = i / plane, y = i % plane / size, x = i % size;
                throw new InvalidOperationException(
                    $"Column '{column}', row {row}: pixel value {v.ToString(System.Globalization.CultureInfo.InvariantCulture)} at index {i} (plane {p}, y {y}, x {x}); expected finite values in [0, 255] " +
                    "(ExtractPixels with its default offsetImage = 0 and scaleImage = 1). Remove or repair the row.");
            }
        }
        for (int p = 0; p < plane; p++)
        {
            if (channels == 1 && planes == 1)
            {
                destination[p] = pixels[p] / 127.5f - 1f;
            }
            else
            {
                float r = pixels[p], g = pixels[plane + p], b = pixels[2 * plane + p];
                if (channels == 1)
                {
                    float y = 0.299f * r + 0.587f * g + 0.114f * b;   // as in ToChw
                    destination[p] = y / 127.5f - 1f;
                }
                else
                {
                    destination[p] = r / 127.5f - 1f;
                    destination[plane + p] = g / 127.5f - 1f;
                    destination[2 * plane + p] = b / 127.5f - 1f;
                }
            }
        }
    }

    /// <summary>Stacks images into a float tensor [B, C, H, W] in [-1, 1] on the CPU.</summary>
    public static Tensor ToTensor(IReadOnlyList<MLImage> images, int channels)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.Count == 0) throw new ArgumentException("No images.", nameof(images));
        int h = images[0].Height, w = images[0].Width;
        int per = channels * h * w;
        var data = new float[images.Count * per];
        for (int i = 0; i < images.Count; i++)
        {
            if (images[i].Height != h || images[i].Width != w)
                throw new ArgumentException($"Image {i} is {images[i].Width}x{images[i].Height}; expected {w}x{h} like image 0.", nameof(images));
            ToChw(images[i], channels, data.AsSpan(i * per, per));
        }
        return tensor(data, new long[] { images.Count, channels, h, w });
    }

    /// <summary>
    /// Converts a tensor [B, C, H, W] (C = 1 or 3) of values in [-1, 1] to Bgra32 pixel arrays, one per image
    /// (grayscale is written to all three colour channels; alpha is 255).
    /// </summary>
    public static byte[][] ToBgraPixels(Tensor images)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.dim() != 4)
            throw new ArgumentException($"Expected a [B, C, H, W] tensor; got shape [{string.Join(", ", images.shape)}].", nameof(images));
        int b = (int)images.shape[0], c = (int)images.shape[1], h = (int)images.shape[2], w = (int)images.shape[3];
        if (c != 1 && c != 3)
            throw new ArgumentException($"Expected 1 or 3 channels; got {c}.", nameof(images));
        float[] values;
        using (var scope = NewDisposeScope())   // detach, to and cpu may each make a tensor: dispose them all
            values = images.detach().to(float32).cpu().contiguous().data<float>().ToArray();
        int plane = h * w;
        var result = new byte[b][];
        for (int i = 0; i < b; i++)
        {
            var px = new byte[4 * plane];
            int off = i * c * plane;
            for (int p = 0; p < plane; p++)
            {
                byte r = ToByte(values[off + p]);
                byte g = c == 1 ? r : ToByte(values[off + plane + p]);
                byte bl = c == 1 ? r : ToByte(values[off + 2 * plane + p]);
                px[4 * p] = bl;
                px[4 * p + 1] = g;
                px[4 * p + 2] = r;
                px[4 * p + 3] = 255;
            }
            result[i] = px;
        }
        return result;
    }

    /// <summary>Converts a tensor [B, C, H, W] of values in [-1, 1] to images.</summary>
    public static MLImage[] ToImages(Tensor images)
    {
        int h = (int)images.shape[2], w = (int)images.shape[3];
        return ToBgraPixels(images).Select(p => MLImage.CreateFromPixels(w, h, MLPixelFormat.Bgra32, p)).ToArray();
    }

    /// <summary>Maps [-1, 1] to a byte: round((x + 1) * 127.5), clamped.</summary>
    public static byte ToByte(float x)
    {
        if (float.IsNaN(x)) return 0;
        float v = MathF.Round((x + 1f) * 127.5f);
        return (byte)Math.Clamp(v, 0f, 255f);
    }
}
