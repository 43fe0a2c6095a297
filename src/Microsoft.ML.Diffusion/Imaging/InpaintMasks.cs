using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion;

/// <summary>Builds the <see cref="InpaintMaskKind"/> masks. A mask is row-major, one value per pixel: true keeps the pixel, false fills it.</summary>
public static class InpaintMasks
{
    /// <summary>The range of the filled fraction of <see cref="InpaintMaskKind.Thin"/> masks (the last stroke may add up to one brush dab more).</summary>
    public static (double Min, double Max) ThinFill => (0.15, 0.30);

    /// <summary>The range of the filled fraction of <see cref="InpaintMaskKind.Wide"/> masks (the last stroke may add up to one brush dab more).</summary>
    public static (double Min, double Max) WideFill => (0.30, 0.50);

    /// <summary>A <paramref name="size"/> x <paramref name="size"/> mask; the random kinds (Thin, Wide) depend on <paramref name="seed"/> only.</summary>
    /// <param name="kind">Which mask.</param>
    /// <param name="size">Side in pixels, at least 4.</param>
    /// <param name="seed">Seed of the random strokes (ignored by the fixed kinds).</param>
    public static bool[] Create(InpaintMaskKind kind, int size, int seed = 0)
    {
        if (size < 4) throw new ArgumentOutOfRangeException(nameof(size), size, "The mask size must be at least 4 pixels.");
        var keep = new bool[size * size];
        switch (kind)
        {
            case InpaintMaskKind.Thin:
            case InpaintMaskKind.Wide:
                Strokes(keep, size, kind == InpaintMaskKind.Wide, new Random(seed));
                break;
            case InpaintMaskKind.Half:
                for (int y = 0; y < size / 2; y++) Array.Fill(keep, true, y * size, size);
                break;
            case InpaintMaskKind.Outer:
                int lo = size / 4, hi = lo + size / 2;
                for (int y = lo; y < hi; y++) Array.Fill(keep, true, y * size + lo, hi - lo);
                break;
            case InpaintMaskKind.AlternatingLines:
                for (int y = 0; y < size; y += 2) Array.Fill(keep, true, y * size, size);
                break;
            case InpaintMaskKind.EverySecondPixel:
                for (int y = 0; y < size; y += 2)
                    for (int x = 0; x < size; x += 2) keep[y * size + x] = true;
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, $"Unknown mask kind; expected one of {string.Join(", ", Enum.GetNames<InpaintMaskKind>())}.");
        }

        return keep;
    }

    /// <summary>The mask as an image: white (255) keeps the pixel, black (0) fills it.</summary>
    public static MLImage CreateImage(InpaintMaskKind kind, int size, int seed = 0) => ToImage(Create(kind, size, seed), size);

    /// <summary>A row-major keep mask as a Bgra32 image: white keeps, black fills.</summary>
    public static MLImage ToImage(bool[] keep, int size)
    {
        ArgumentNullException.ThrowIfNull(keep);
        if (keep.Length != size * size)
            throw new ArgumentException($"The mask has {keep.Length} values; a {size}x{size} image needs {size * size}.", nameof(keep));
        var px = new byte[4 * keep.Length];
        for (int i = 0; i < keep.Length; i++)
        {
            byte v = keep[i] ? (byte)255 : (byte)0;
            px[4 * i] = px[4 * i + 1] = px[4 * i + 2] = v;
            px[4 * i + 3] = 255;
        }

        return MLImage.CreateFromPixels(size, size, MLPixelFormat.Bgra32, px);
    }

    /// <summary>The fraction of pixels a mask fills (false values).</summary>
    public static double FilledFraction(bool[] keep)
    {
        ArgumentNullException.ThrowIfNull(keep);
        return keep.Count(k => !k) / (double)keep.Length;
    }

    /// <summary>
    /// Random brush strokes in the manner of LaMa's / RePaint's thin and wide masks: random walks of round dabs that turn
    /// every few pixels, drawn until the filled fraction reaches a target drawn from <see cref="ThinFill"/> or <see cref="WideFill"/>.
    /// Wide masks start with one random box, as LaMa's do.
    /// </summary>
    private static void Strokes(bool[] keep, int size, bool wide, Random rng)
    {
        Array.Fill(keep, true);
        var (min, max) = wide ? WideFill : ThinFill;
        double target = min + (max - min) * rng.NextDouble();
        double scale = size / 28.0;
        int filled = 0;
        int Need() => (int)Math.Ceiling(target * keep.Length);

        if (wide)
        {
            int bw = Math.Max(2, (int)Math.Round(size * (0.2 + 0.2 * rng.NextDouble())));
            int bh = Math.Max(2, (int)Math.Round(size * (0.2 + 0.2 * rng.NextDouble())));
            int bx = rng.Next(0, size - bw + 1), by = rng.Next(0, size - bh + 1);
            for (int y = by; y < by + bh; y++)
                for (int x = bx; x < bx + bw; x++)
                    if (keep[y * size + x]) { keep[y * size + x] = false; filled++; }
        }

        for (int guard = 0; filled < Need() && guard < 1000; guard++)
        {
            // One stroke: a random start, then segments of random direction and length.
            double radius = (wide ? 2.5 + 1.5 * rng.NextDouble() : 0.8 + 0.7 * rng.NextDouble()) * scale;
            double px = rng.NextDouble() * (size - 1), py = rng.NextDouble() * (size - 1);
            int segments = rng.Next(2, 6);
            for (int s = 0; s < segments && filled < Need(); s++)
            {
                double angle = rng.NextDouble() * 2 * Math.PI;
                double length = size * (1.0 / 6 + rng.NextDouble() / 6);
                double stepLen = Math.Max(0.5, radius / 2);
                for (double d = 0; d <= length && filled < Need(); d += stepLen)
                {
                    filled += Dab(keep, size, px, py, radius);
                    px = Math.Clamp(px + stepLen * Math.Cos(angle), 0, size - 1);
                    py = Math.Clamp(py + stepLen * Math.Sin(angle), 0, size - 1);
                }
            }
        }
    }

    /// <summary>Marks the pixels within <paramref name="r"/> of (cx, cy) as filled; returns how many were newly filled.</summary>
    private static int Dab(bool[] keep, int size, double cx, double cy, double r)
    {
        int count = 0;
        int x0 = Math.Max(0, (int)Math.Floor(cx - r)), x1 = Math.Min(size - 1, (int)Math.Ceiling(cx + r));
        int y0 = Math.Max(0, (int)Math.Floor(cy - r)), y1 = Math.Min(size - 1, (int)Math.Ceiling(cy + r));
        for (int y = y0; y <= y1; y++)
            for (int x = x0; x <= x1; x++)
            {
                double dx = x - cx, dy = y - cy;
                if (dx * dx + dy * dy <= r * r && keep[y * size + x])
                {
                    keep[y * size + x] = false;
                    count++;
                }
            }

        return count;
    }
}
