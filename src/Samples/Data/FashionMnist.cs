using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Diffusion.Samples.Data;

/// <summary>Fashion-MNIST (Xiao et al. 2017, MIT licence) as an ML.NET IDataView of 28x28 images, streamed from the IDX files.</summary>
public static class FashionMnist
{
    /// <summary>Where Debian's dataset-fashion-mnist package puts the files.</summary>
    public const string DefaultDirectory = "/usr/share/datasets/fashion-mnist";

    /// <summary>The ten class names, by label.</summary>
    public static readonly string[] ClassNames =
        { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot" };

    /// <summary>One row: the image and its label.</summary>
    public sealed class Item
    {
        /// <summary>28x28 grayscale image (Bgra32 with equal channels).</summary>
        [ImageType(28, 28)]
        public MLImage Image { get; set; } = null!;

        /// <summary>Class 0..9.</summary>
        public uint Label { get; set; }
    }

    /// <summary>The image file of a split ("train" or "t10k") in <paramref name="directory"/>, plain or .gz.</summary>
    public static string ImagesPath(string directory, string split) => Find(directory, $"{split}-images-idx3-ubyte");

    /// <summary>The label file of a split.</summary>
    public static string LabelsPath(string directory, string split) => Find(directory, $"{split}-labels-idx1-ubyte");

    /// <summary>
    /// The split as a lazily read IDataView (columns Image, Label); each cursor re-reads the files, so the
    /// 60,000 training images are never held in memory at once.
    /// </summary>
    public static IDataView Load(MLContext ml, string directory, string split = "train", int? limit = null)
    {
        string images = ImagesPath(directory, split), labels = LabelsPath(directory, split);
        return ml.Data.LoadFromEnumerable(new LazyItems(images, labels, limit));
    }

    /// <summary>Raw 28x28 images of a split as byte arrays.</summary>
    public static IEnumerable<byte[]> ReadRaw(string directory, string split = "train", int? limit = null) =>
        IdxReader.ReadImages(ImagesPath(directory, split), limit);

    /// <summary>
    /// A split as tensors: images [N, 1, 28, 28] float32 in [-1, 1] (byte / 127.5 - 1, as ImageTensorConverter scales) and labels [N] int64.
    /// </summary>
    public static (TorchSharp.torch.Tensor Images, TorchSharp.torch.Tensor Labels) LoadTensors(string directory, string split = "train", int? limit = null)
    {
        var raw = ReadRaw(directory, split, limit).ToList();
        var labels = IdxReader.ReadLabels(LabelsPath(directory, split), limit).Select(l => (long)l).ToArray();
        var bytes = new byte[raw.Count * 784];
        for (int i = 0; i < raw.Count; i++) raw[i].CopyTo(bytes, i * 784);
        using var u8 = TorchSharp.torch.tensor(bytes, new long[] { raw.Count, 1, 28, 28 });
        using var f = u8.to(TorchSharp.torch.float32);
        return (f / 127.5f - 1f, TorchSharp.torch.tensor(labels));
    }

    /// <summary>A grayscale byte image as an MLImage.</summary>
    public static MLImage ToImage(byte[] gray, int width = 28, int height = 28)
    {
        var px = new byte[4 * gray.Length];
        for (int i = 0; i < gray.Length; i++)
        {
            px[4 * i] = px[4 * i + 1] = px[4 * i + 2] = gray[i];
            px[4 * i + 3] = 255;
        }
        return MLImage.CreateFromPixels(width, height, MLPixelFormat.Bgra32, px);
    }

    private static string Find(string directory, string name)
    {
        foreach (var candidate in new[] { name, name + ".gz" })
        {
            string p = Path.Combine(directory, candidate);
            if (File.Exists(p)) return p;
        }
        throw new FileNotFoundException(
            $"Fashion-MNIST file '{name}[.gz]' was not found in '{directory}'. Install it with `sudo apt-get install dataset-fashion-mnist` " +
            $"(files go to {DefaultDirectory}) or pass --data DIR with the IDX files.", Path.Combine(directory, name));
    }

    private sealed class LazyItems : IEnumerable<Item>
    {
        private readonly string _images, _labels;
        private readonly int? _limit;

        public LazyItems(string images, string labels, int? limit) => (_images, _labels, _limit) = (images, labels, limit);

        public IEnumerator<Item> GetEnumerator()
        {
            using var labels = IdxReader.ReadLabels(_labels, _limit).GetEnumerator();
            foreach (var img in IdxReader.ReadImages(_images, _limit))
            {
                labels.MoveNext();
                yield return new Item { Image = ToImage(img), Label = labels.Current };
            }
        }

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }
}
