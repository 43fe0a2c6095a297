using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Columns;

namespace Microsoft.ML.Diffusion.Transforms;

/// <summary>
/// The scale factor of latent diffusion (Rombach et al. 2022, section 4.3.2 and appendix G, "scale_by_std"), measured on the
/// training data; <see cref="Sampling.LatentCodec"/> applies it.
/// </summary>
internal static class LatentScale
{
    /// <summary>
    /// s = 1 / std of all elements of the posterior means of the first <paramref name="rows"/> rows of <paramref name="input"/>
    /// in input order (unbiased standard deviation, float64, as torch's <c>z.flatten().std()</c> in LDM).
    /// </summary>
    public static double Compute(AutoencoderModel autoencoder, IDataView input, TrainingImageInput imageCol, int rows)
    {
        int per = autoencoder.Channels * autoencoder.ImageSize * autoencoder.ImageSize;
        var values = new List<float>(rows * per);
        using (var cursor = input.GetRowCursor(new[] { imageCol.Column }))
        {
            var read = imageCol.CreateReader(cursor);
            var row = new float[per];
            long n = 0;
            while (n < rows && cursor.MoveNext())
            {
                read(n, row);
                values.AddRange(row);
                n++;
            }
        }
        if (values.Count == 0)
            throw new InvalidOperationException($"Column '{imageCol.Column.Name}': the input has no rows; the latent scale factor needs at least one image.");
        int count = values.Count / per;
        using var images = tensor(values.ToArray(), new long[] { count, autoencoder.Channels, autoencoder.ImageSize, autoencoder.ImageSize });
        using var z = autoencoder.Encode(images);
        double std = z.to_type(float64).flatten().std().item<double>();
        if (!(std > 1e-12 && double.IsFinite(std)))
            throw new InvalidOperationException(
                $"The autoencoder's latents of the first {count} training images have standard deviation {std}; the latent scale factor 1/std " +
                "needs a positive finite value. Check the images (all equal?) and the autoencoder (trained?).");
        return 1.0 / std;
    }
}
