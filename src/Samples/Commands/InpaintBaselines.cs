namespace Microsoft.ML.Diffusion.Samples.Commands;

/// <summary>The simple fills and interpolations the evaluate-inpaint command compares RePaint with. Images are row-major grey bytes.</summary>
public static class InpaintBaselines
{
    /// <summary>Every filled pixel set to the mean of the known pixels.</summary>
    public static byte[] MeanFill(byte[] image, bool[] keep)
    {
        double sum = 0;
        int n = 0;
        for (int p = 0; p < image.Length; p++)
            if (keep[p]) { sum += image[p]; n++; }
        byte mean = (byte)Math.Round(n > 0 ? sum / n : 0);
        return image.Select((v, p) => keep[p] ? v : mean).ToArray();
    }

    /// <summary>Every filled pixel set to the value of the nearest known pixel (Euclidean distance; the first in row-major order on ties).</summary>
    public static byte[] NearestFill(byte[] image, bool[] keep, int size)
    {
        var known = Enumerable.Range(0, image.Length).Where(p => keep[p]).ToArray();
        var result = (byte[])image.Clone();
        if (known.Length == 0) return result;
        for (int p = 0; p < image.Length; p++)
        {
            if (keep[p]) continue;
            int y = p / size, x = p % size, best = known[0], bestD = int.MaxValue;
            foreach (int q in known)
            {
                int dy = q / size - y, dx = q % size - x, d = dy * dy + dx * dx;
                if (d < bestD) { bestD = d; best = q; }
            }
            result[p] = image[best];
        }
        return result;
    }

    /// <summary>
    /// Bicubic upscaling by <paramref name="factor"/> aligned with the upscale transform's grid: low-resolution pixel (i, j) is
    /// output pixel (factor i, factor j), so the known pixels pass through unchanged, and the others are Keys' cubic convolution
    /// (a = -0.5) of the 4 x 4 neighbouring samples, edges clamped.
    /// </summary>
    public static byte[] Bicubic(byte[] small, int smallSize, int factor)
    {
        int size = smallSize * factor;
        var result = new byte[size * size];
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
            {
                double u = (double)y / factor, v = (double)x / factor;
                int i0 = (int)Math.Floor(u), j0 = (int)Math.Floor(v);
                double fu = u - i0, fv = v - j0, sum = 0;
                for (int di = -1; di <= 2; di++)
                {
                    double wy = Keys(di - fu);
                    int i = Math.Clamp(i0 + di, 0, smallSize - 1);
                    for (int dj = -1; dj <= 2; dj++)
                    {
                        int j = Math.Clamp(j0 + dj, 0, smallSize - 1);
                        sum += wy * Keys(dj - fv) * small[i * smallSize + j];
                    }
                }
                result[y * size + x] = (byte)Math.Clamp(Math.Round(sum), 0, 255);
            }
        return result;
    }

    /// <summary>Each low-resolution pixel repeated factor x factor times.</summary>
    public static byte[] Nearest(byte[] small, int smallSize, int factor)
    {
        int size = smallSize * factor;
        var result = new byte[size * size];
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
                result[y * size + x] = small[(y / factor) * smallSize + x / factor];
        return result;
    }

    /// <summary>Keys' cubic convolution kernel with a = -0.5 (Keys 1981), the kernel of bicubic resampling.</summary>
    private static double Keys(double t)
    {
        const double a = -0.5;
        t = Math.Abs(t);
        if (t <= 1) return (a + 2) * t * t * t - (a + 3) * t * t + 1;
        if (t < 2) return a * t * t * t - 5 * a * t * t + 8 * a * t - 4 * a;
        return 0;
    }

    /// <summary>Sum of squared errors (pixel values scaled to [0, 1]) over the pixels where <paramref name="where"/> is true (all when null), and their count.</summary>
    public static (double Sse, long Count) SquaredError(byte[] a, byte[] b, bool[]? where = null)
    {
        double sse = 0;
        long n = 0;
        for (int p = 0; p < a.Length; p++)
        {
            if (where is not null && !where[p]) continue;
            double d = (a[p] - b[p]) / 255.0;
            sse += d * d;
            n++;
        }
        return (sse, n);
    }
}
