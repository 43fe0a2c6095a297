using Microsoft.ML.Diffusion.Imaging;

namespace Microsoft.ML.Diffusion.Tests.Inpainting;

/// <summary>The built-in masks: shapes, filled fractions, seeding, and the MLImage form.</summary>
[TestClass]
public class InpaintMaskTests
{
    [TestMethod]
    public void FixedMasksHaveTheirShapes()
    {
        const int n = 28;
        var half = InpaintMasks.Create(InpaintMaskKind.Half, n);
        Assert.IsTrue(half[0] && half[13 * n + 27] && !half[14 * n] && !half[27 * n + 27], "top half kept, bottom half filled");
        Assert.AreEqual(0.5, InpaintMasks.FilledFraction(half));

        var outer = InpaintMasks.Create(InpaintMaskKind.Outer, n);
        Assert.AreEqual(14 * 14, outer.Count(k => k), "the centre 14x14 square is kept");
        Assert.IsTrue(outer[7 * n + 7] && outer[20 * n + 20] && !outer[6 * n + 7] && !outer[7 * n + 21] && !outer[0]);

        var lines = InpaintMasks.Create(InpaintMaskKind.AlternatingLines, n);
        for (int y = 0; y < n; y++) Assert.AreEqual(y % 2 == 0, lines[y * n + 5], $"row {y}");
        Assert.AreEqual(0.5, InpaintMasks.FilledFraction(lines));

        var sr = InpaintMasks.Create(InpaintMaskKind.EverySecondPixel, n);
        for (int y = 0; y < n; y++)
            for (int x = 0; x < n; x++)
                Assert.AreEqual(y % 2 == 0 && x % 2 == 0, sr[y * n + x]);
        Assert.AreEqual(0.75, InpaintMasks.FilledFraction(sr));
    }

    [TestMethod]
    public void RandomMasksFillTheirFractionAndFollowTheSeed()
    {
        foreach (var (kind, (min, max), dab) in new[] { (InpaintMaskKind.Thin, InpaintMasks.ThinFill, 0.02), (InpaintMaskKind.Wide, InpaintMasks.WideFill, 0.07) })
        {
            var fractions = new List<double>();
            for (int seed = 0; seed < 40; seed++)
            {
                var m = InpaintMasks.Create(kind, 28, seed);
                double f = InpaintMasks.FilledFraction(m);
                Assert.IsTrue(f >= min && f <= max + dab, $"{kind} seed {seed}: filled {f:F3}");
                fractions.Add(f);
                CollectionAssert.AreEqual(m, InpaintMasks.Create(kind, 28, seed), "same seed, same mask");
            }
            Assert.IsFalse(InpaintMasks.Create(kind, 28, 1).SequenceEqual(InpaintMasks.Create(kind, 28, 2)), "another seed, another mask");
            Assert.IsTrue(fractions.Max() - fractions.Min() > 0.05, $"{kind}: fractions vary with the seed");
        }
        // Thin strokes are thin: most filled pixels have a kept pixel among their 4 neighbours.
        var thin = InpaintMasks.Create(InpaintMaskKind.Thin, 28, 3);
        int filled = 0, edge = 0;
        for (int y = 1; y < 27; y++)
            for (int x = 1; x < 27; x++)
                if (!thin[y * 28 + x])
                {
                    filled++;
                    if (thin[(y - 1) * 28 + x] || thin[(y + 1) * 28 + x] || thin[y * 28 + x - 1] || thin[y * 28 + x + 1]) edge++;
                }
        Assert.IsTrue(edge > 0.6 * filled, $"{edge} of {filled} filled pixels touch a kept one");
    }

    [TestMethod]
    public void CreateMaskGivesAWhiteKeepImage()
    {
        var ml = new MLContext(1);
        using var image = ml.Generative.CreateMask(InpaintMaskKind.Half, 8);
        Assert.AreEqual(8, image.Width);
        Assert.AreEqual(8, image.Height);
        var px = image.Pixels.ToArray();
        Assert.AreEqual(255, px[0]);                      // (0, 0) kept: white
        Assert.AreEqual(0, px[4 * (7 * 8 + 7)]);          // (7, 7) filled: black
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => InpaintMasks.Create((InpaintMaskKind)42, 8));
        StringAssert.Contains(e.Message, "Thin");
    }
}
