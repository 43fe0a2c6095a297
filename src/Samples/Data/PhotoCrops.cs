using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Diffusion.Samples.Data;

/// <summary>
/// Square RGB crops of the photos Debian's python3-skimage package ships (CC0 / public-domain images such as astronaut, coffee,
/// chelsea, rocket; <c>sudo apt-get install python3-skimage</c> puts them in <see cref="DefaultDirectory"/>).
/// </summary>
public static class PhotoCrops
{
    /// <summary>The crop side in pixels.</summary>
    public const int Size = 64;

    /// <summary>Where python3-skimage installs its sample images.</summary>
    public const string DefaultDirectory = "/usr/lib/python3/dist-packages/skimage/data";

    /// <summary>One crop; the UInt32 column makes the schema savable.</summary>
    public sealed class Row
    {
        /// <summary>The crop.</summary>
        [ImageType(Size, Size)]
        public MLImage Image { get; set; } = null!;

        /// <summary>Index of the source photo.</summary>
        public uint Source { get; set; }
    }

    /// <summary>The .png and .jpg files of <paramref name="directory"/> at least <paramref name="size"/> pixels on each side, in name order.</summary>
    public static List<(string Path, MLImage Image)> LoadPhotos(string directory, int size)
    {
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException($"No photo folder '{directory}'. Install Debian's python3-skimage (sudo apt-get install python3-skimage) or pass --data.");
        var photos = new List<(string, MLImage)>();
        foreach (var path in Directory.EnumerateFiles(directory).Where(p => p.EndsWith(".png", StringComparison.OrdinalIgnoreCase) || p.EndsWith(".jpg", StringComparison.OrdinalIgnoreCase)).Order(StringComparer.Ordinal))
        {
            MLImage image;
            try
            {
                image = MLImage.CreateFromFile(path);
            }
            catch (Exception)
            {
                continue;   // a format SkiaSharp does not read
            }
            if (image.Width >= size && image.Height >= size && (image.PixelFormat == MLPixelFormat.Bgra32 || image.PixelFormat == MLPixelFormat.Rgba32))
                photos.Add((path, image));
            else
                image.Dispose();
        }
        if (photos.Count == 0)
            throw new FileNotFoundException($"No .png or .jpg photo of at least {size}x{size} pixels in '{directory}'.");
        return photos;
    }

    /// <summary><paramref name="count"/> random <paramref name="size"/> x <paramref name="size"/> crops (photo, then position, from <paramref name="seed"/>).</summary>
    public static List<Row> Crops(IReadOnlyList<(string Path, MLImage Image)> photos, int count, int size, int seed)
    {
        var rng = new Random(seed);
        var rows = new List<Row>(count);
        for (int i = 0; i < count; i++)
        {
            int p = rng.Next(photos.Count);
            var src = photos[p].Image;
            int ox = rng.Next(src.Width - size + 1), oy = rng.Next(src.Height - size + 1);
            var pixels = src.Pixels;
            bool bgra = src.PixelFormat == MLPixelFormat.Bgra32;
            var crop = new byte[4 * size * size];
            for (int y = 0; y < size; y++)
                for (int x = 0; x < size; x++)
                {
                    int s = 4 * ((oy + y) * src.Width + ox + x), d = 4 * (y * size + x);
                    crop[d] = pixels[s + (bgra ? 0 : 2)];
                    crop[d + 1] = pixels[s + 1];
                    crop[d + 2] = pixels[s + (bgra ? 2 : 0)];
                    crop[d + 3] = 255;
                }
            rows.Add(new Row { Image = MLImage.CreateFromPixels(size, size, MLPixelFormat.Bgra32, crop), Source = (uint)p });
        }
        return rows;
    }

    /// <summary>The rows as an IDataView with an image column of <see cref="Size"/> x <see cref="Size"/>.</summary>
    public static IDataView ToDataView(MLContext ml, IEnumerable<Row> rows) => ml.Data.LoadFromEnumerable(rows);
}
