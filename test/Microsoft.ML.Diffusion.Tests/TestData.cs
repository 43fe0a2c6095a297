using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Diffusion.Tests;

/// <summary>Small synthetic image sets and tiny model options for fast tests.</summary>
internal static class TestData
{
    public sealed class Image8
    {
        [ImageType(8, 8)]
        public MLImage Image { get; set; } = null!;

        /// <summary>A savable column: ML.NET cannot save an input schema made of image columns only.</summary>
        public uint Label { get; set; }
    }

    public sealed class Image16
    {
        [ImageType(16, 16)]
        public MLImage Image { get; set; } = null!;
    }

    /// <summary>A vector of the right length but of integers: not an image nor a float pixel vector.</summary>
    public sealed class IntRow
    {
        [VectorType(64)]
        public int[] Image { get; set; } = new int[64];
    }

    /// <summary>A grey image: value(x, y) from <paramref name="f"/>.</summary>
    public static MLImage Gray(int size, Func<int, int, byte> f)
    {
        var px = new byte[4 * size * size];
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
            {
                int i = 4 * (y * size + x);
                px[i] = px[i + 1] = px[i + 2] = f(x, y);
                px[i + 3] = 255;
            }
        return MLImage.CreateFromPixels(size, size, MLPixelFormat.Bgra32, px);
    }

    /// <summary>Synthetic 8x8 data: bright squares at a few positions on a dark background.</summary>
    public static IEnumerable<Image8> Squares(int count, int seed = 0)
    {
        var rng = new Random(seed);
        for (int i = 0; i < count; i++)
        {
            int ox = rng.Next(0, 5), oy = rng.Next(0, 5);
            yield return new Image8 { Image = Gray(8, (x, y) => (byte)(x >= ox && x < ox + 3 && y >= oy && y < oy + 3 ? 230 : 20)), Label = (uint)(ox + 5 * oy) };
        }
    }

    /// <summary>A fixed batch [n, 1, 8, 8] of bright squares (0.8) on a dark background (-0.85), in [-1, 1], for the network and loss tests.</summary>
    public static TorchSharp.torch.Tensor SquaresTensor(int n)
    {
        var data = new float[n * 64];
        var rng = new Random(0);
        for (int i = 0; i < n; i++)
        {
            int ox = rng.Next(0, 5), oy = rng.Next(0, 5);
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++)
                    data[i * 64 + y * 8 + x] = x >= ox && x < ox + 3 && y >= oy && y < oy + 3 ? 0.8f : -0.85f;
        }
        return TorchSharp.torch.tensor(data, new long[] { n, 1, 8, 8 });
    }

    /// <summary>Options of a tiny 8x8 model that trains in a fraction of a second per step.</summary>
    public static DiffusionTrainer.Options TinyOptions(int steps = 4) => new()
    {
        ImageColumnName = "Image", OutputColumnName = "GeneratedImage", ImageSize = 8, Channels = 1,
        BaseChannels = 8, ChannelMultipliers = new[] { 1, 2 }, AttentionResolutions = new[] { 4 }, NumResBlocks = 1,
        GroupNormGroups = 4, Timesteps = 50, Epochs = 100, BatchSize = 8, MaxSteps = steps, LearningRate = 1e-3f,
        Seed = 3, Sampler = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 5, BatchSize = 16 },
    };

    public static byte[] Pixels(MLImage image) => image.Pixels.ToArray();

    /// <summary>A new empty directory under the system's temporary folder, named <paramref name="prefix"/>-GUID.</summary>
    public static string TempDirectory(string prefix)
    {
        string dir = Path.Combine(Path.GetTempPath(), prefix + "-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>SchemaShape.Create is internal in ML.NET 5; estimator tests need a shape of a schema.</summary>
    public static SchemaShape ShapeOf(DataViewSchema schema) =>
        (SchemaShape)typeof(SchemaShape).GetMethod("Create", System.Reflection.BindingFlags.Static | System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Public,
            new[] { typeof(DataViewSchema) })!.Invoke(null, new object[] { schema })!;
}
