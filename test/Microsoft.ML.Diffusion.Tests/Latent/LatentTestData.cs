using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Diffusion.Tests.Latent;

/// <summary>16x16 synthetic images and tiny autoencoder options for the latent-diffusion tests.</summary>
internal static class LatentTestData
{
    public sealed class Row16
    {
        [ImageType(16, 16)]
        public MLImage Image { get; set; } = null!;

        /// <summary>A savable column (ML.NET cannot save an input schema of image columns only).</summary>
        public uint Label { get; set; }
    }

    /// <summary>Bright 6x6 squares at random positions on a dark gradient background.</summary>
    public static List<Row16> Squares16(int count, int seed = 0)
    {
        var rng = new Random(seed);
        var rows = new List<Row16>();
        for (int i = 0; i < count; i++)
        {
            int ox = rng.Next(0, 11), oy = rng.Next(0, 11);
            rows.Add(new Row16
            {
                Image = TestData.Gray(16, (x, y) => (byte)(x >= ox && x < ox + 6 && y >= oy && y < oy + 6 ? 220 : 20 + 4 * y)),
                Label = (uint)i,
            });
        }
        return rows;
    }

    /// <summary>A tiny autoencoder: 16x16 grayscale, factor 4 (latent 4x4x4), base 8 channels.</summary>
    public static AutoencoderTrainer.Options TinyAutoencoder(int steps, int factor = 4) => new()
    {
        ImageColumnName = "Image", ImageSize = 16, Channels = 1, DownsamplingFactor = factor, LatentChannels = 4,
        BaseChannels = 8, GroupNormGroups = 4, NumResBlocks = 1, BatchSize = 8, Epochs = 1000, MaxSteps = steps,
        LearningRate = 2e-3f, Seed = 5,
    };
}
