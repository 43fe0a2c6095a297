using Microsoft.ML.Diffusion.Conditions;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Conditions;

/// <summary>The SR3 conditioning image: area downsampling and bicubic upsampling against an independent float64 recomputation.</summary>
[TestClass]
public class LowResolutionConditionTests
{
    /// <summary>Keys' cubic convolution kernel with a = -0.75 (the coefficient torch's bicubic mode uses).</summary>
    private static double Cubic(double x)
    {
        const double a = -0.75;
        x = Math.Abs(x);
        if (x <= 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
        if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
        return 0;
    }

    /// <summary>Bicubic resampling of one [n, n] plane to [m, m], align_corners false (source coordinate (i + 0.5) n/m - 0.5,
    /// not clamped), neighbours outside the image replaced by the nearest border pixel.</summary>
    private static double[,] BicubicReference(double[,] plane, int m)
    {
        int n = plane.GetLength(0);
        double scale = (double)n / m;
        var outPlane = new double[m, m];
        for (int oy = 0; oy < m; oy++)
            for (int ox = 0; ox < m; ox++)
            {
                double sy = (oy + 0.5) * scale - 0.5, sx = (ox + 0.5) * scale - 0.5;
                int iy = (int)Math.Floor(sy), ix = (int)Math.Floor(sx);
                double sum = 0;
                for (int dy = -1; dy <= 2; dy++)
                    for (int dx = -1; dx <= 2; dx++)
                    {
                        int yy = Math.Clamp(iy + dy, 0, n - 1), xx = Math.Clamp(ix + dx, 0, n - 1);
                        sum += Cubic(sy - (iy + dy)) * Cubic(sx - (ix + dx)) * plane[yy, xx];
                    }
                outPlane[oy, ox] = sum;
            }
        return outPlane;
    }

    [TestMethod]
    [DataRow(2, 8, 1)]
    [DataRow(4, 16, 3)]
    public void FromImageIsAreaDownsamplingThenClampedBicubicUpsampling(int factor, int size, int channels)
    {
        var rng = new Random(factor * 100 + size);
        int batch = 2;
        var values = new float[batch * channels * size * size];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() * 2 - 1);
        using var x0 = tensor(values, new long[] { batch, channels, size, size });
        using var cond = LowResolutionCondition.FromImage(x0, factor);
        CollectionAssert.AreEqual(new long[] { batch, channels, size, size }, cond.shape);
        var got = cond.data<float>().ToArray();

        int small = size / factor;
        double maxError = 0;
        for (int b = 0; b < batch; b++)
            for (int c = 0; c < channels; c++)
            {
                int offset = (b * channels + c) * size * size;
                // Area (average) pooling over factor x factor blocks.
                var low = new double[small, small];
                for (int y = 0; y < small; y++)
                    for (int x = 0; x < small; x++)
                    {
                        double s = 0;
                        for (int dy = 0; dy < factor; dy++)
                            for (int dx = 0; dx < factor; dx++)
                                s += values[offset + (y * factor + dy) * size + x * factor + dx];
                        low[y, x] = s / (factor * factor);
                    }
                var up = BicubicReference(low, size);
                for (int y = 0; y < size; y++)
                    for (int x = 0; x < size; x++)
                    {
                        double expected = Math.Clamp(up[y, x], -1, 1);
                        maxError = Math.Max(maxError, Math.Abs(expected - got[offset + y * size + x]));
                    }
            }
        Assert.IsTrue(maxError < 1e-5, $"max |error| {maxError}");
        Assert.IsTrue(got.All(v => v >= -1 && v <= 1), "clamped to [-1, 1]");
    }

    [TestMethod]
    public void BicubicOvershootIsClamped()
    {
        // A hard edge from -1 to 1: bicubic interpolation overshoots beyond [-1, 1] next to it; the condition is clamped.
        var low = new float[16];
        for (int y = 0; y < 4; y++) for (int x = 0; x < 4; x++) low[y * 4 + x] = x < 2 ? -1f : 1f;
        using var t = tensor(low, new long[] { 1, 1, 4, 4 });
        using var up = LowResolutionCondition.Upsample(t, 16);
        var plane = new double[4, 4];
        for (int y = 0; y < 4; y++) for (int x = 0; x < 4; x++) plane[y, x] = low[y * 4 + x];
        var reference = BicubicReference(plane, 16);
        Assert.IsTrue(reference.Cast<double>().Any(v => v > 1.01), "the test input must make bicubic overshoot");
        var got = up.data<float>().ToArray();
        for (int y = 0; y < 16; y++)
            for (int x = 0; x < 16; x++)
                Assert.AreEqual(Math.Clamp(reference[y, x], -1, 1), got[y * 16 + x], 1e-5, $"pixel ({x}, {y})");
    }

    [TestMethod]
    public void FactorsOtherThanTwoOrFourAreRejected()
    {
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Conditioning.LowResolution(3));
        StringAssert.Contains(e.Message, "2 or 4");
        var options = TestData.TinyOptions();
        options.ImageSize = 6;
        options.ChannelMultipliers = new[] { 1 };
        options.AttentionResolutions = Array.Empty<int>();
        options.Conditioning = Conditioning.LowResolution(4);
        var e2 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new MLContext().Generative.Diffusion(options));
        StringAssert.Contains(e2.Message, "ImageSize is 6");
    }
}
