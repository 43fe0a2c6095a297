using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedules;

[TestClass]
public class DiffusionScheduleTests
{
    [TestMethod]
    public void PosteriorVariance_LinearT1000_MatchesDesignNumbers()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        Assert.AreEqual(NoiseSchedule.Linear, s.Kind);
        Assert.IsFalse(s.IsCustom);
        Assert.AreEqual(1000, s.Timesteps);
        // DESIGN.md section 4: about 0.00979 at t = 487 and about 0.02 at t = 999.
        Assert.AreEqual(0.00979, s.PosteriorVariance[487], 5e-6);
        Assert.AreEqual(0.02, s.PosteriorVariance[999], 5e-5);
        Assert.AreEqual(0.0, s.PosteriorVariance[0]);
        // log variance: t = 0 borrows t = 1 (improved-diffusion).
        Assert.AreEqual(Math.Log(s.PosteriorVariance[1]), s.PosteriorLogVarianceClipped[0], 1e-12);
        Assert.AreEqual(Math.Log(s.PosteriorVariance[500]), s.PosteriorLogVarianceClipped[500], 1e-12);
    }

    [TestMethod]
    public void DerivedArrays_MatchDdpmFormulas()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        var betas = ReferenceSchedules.LinearBetas(1000);
        var abar = ReferenceSchedules.AlphaBars(betas);
        for (int t = 0; t < 1000; t += 37)
        {
            double prev = t == 0 ? 1.0 : abar[t - 1];
            Assert.AreEqual(betas[t], s.Betas[t], 1e-15);
            Assert.AreEqual(1 - betas[t], s.Alphas[t], 1e-15);
            Assert.AreEqual(abar[t], s.AlphaBars[t], 1e-13);
            Assert.AreEqual(prev, s.AlphaBarsPrev[t], 1e-13);
            Assert.AreEqual(abar[t], s.AlphaBar(t), 1e-13);
            // DDPM eq. 7.
            Assert.AreEqual((1 - prev) / (1 - abar[t]) * betas[t], s.PosteriorVariance[t], 1e-13);
            Assert.AreEqual(Math.Sqrt(prev) * betas[t] / (1 - abar[t]), s.PosteriorMeanCoef1[t], 1e-12);
            Assert.AreEqual(Math.Sqrt(1 - betas[t]) * (1 - prev) / (1 - abar[t]), s.PosteriorMeanCoef2[t], 1e-12);
        }

        Assert.AreEqual(1.0, s.AlphaBarsPrev[0]);
        Assert.AreEqual(1.0, s.AlphaBar(-1));
        Assert.AreEqual(4.0358e-5, s.AlphaBar(999), 1e-9);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => s.AlphaBar(-2));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => s.AlphaBar(1000));
    }

    [TestMethod]
    public void CustomBetas_AreCopiedAndValidated()
    {
        var betas = new[] { 0.1, 0.2, 0.3 };
        var s = new DiffusionSchedule(betas);
        Assert.IsTrue(s.IsCustom);
        Assert.AreEqual(3, s.Timesteps);
        betas[0] = 0.5;
        Assert.AreEqual(0.1, s.Betas[0]);
        Assert.AreEqual(0.9 * 0.8 * 0.7, s.AlphaBar(2), 1e-15);

        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DiffusionSchedule(Array.Empty<double>()));
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DiffusionSchedule(new[] { 0.1, 1.0 }));
        Assert.Contains("betas[1]", e.Message);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DiffusionSchedule(new[] { 0.0 }));
        Assert.ThrowsExactly<ArgumentNullException>(() => new DiffusionSchedule(null!));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DiffusionSchedule(NoiseSchedule.Cosine, 0));
    }

    [TestMethod]
    public void Extract_GathersAsFloat32BroadcastShape()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Cosine, 50);
        using var t = tensor(new long[] { 0, 49, 7 });
        using var e = s.Extract(s.AlphaBars, t);
        CollectionAssert.AreEqual(new long[] { 3, 1, 1, 1 }, e.shape);
        Assert.AreEqual(ScalarType.Float32, e.dtype);
        Assert.AreEqual(t.device_type, e.device_type);
        var values = e.data<float>().ToArray();
        var abar = ReferenceSchedules.AlphaBars(ReferenceSchedules.CosineBetas(50));
        Assert.AreEqual((float)abar[0], values[0]);
        Assert.AreEqual((float)abar[49], values[1]);
        Assert.AreEqual((float)abar[7], values[2]);

        using var e2 = s.Extract(s.Betas, t, ndim: 2);
        CollectionAssert.AreEqual(new long[] { 3, 1 }, e2.shape);

        using var x0 = zeros(3, 2);
        using var n = ones(3, 2);
        using (var outer = NewDisposeScope())
        {
            var xt = s.AddNoise(x0, n, t);
            Assert.AreEqual(1, outer.DisposablesCount, "AddNoise leaves only its result in the caller's scope");
        }

        Assert.AreEqual(7L, t[2].item<long>(), "t is still alive");

        using var bad = tensor(new long[] { 50 });
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => s.Extract(s.Betas, bad));
        using var badType = tensor(new float[] { 1 });
        Assert.ThrowsExactly<ArgumentException>(() => s.Extract(s.Betas, badType));
    }

    [TestMethod]
    public void AddNoise_IsDdpmEq4()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        var abar = ReferenceSchedules.AlphaBars(ReferenceSchedules.LinearBetas(1000));
        using var gen = new TorchSharp.torch.Generator(1234);
        using var x0 = rand(new long[] { 3, 2, 4, 4 }, generator: gen) * 2 - 1;
        using var noise = randn(new long[] { 3, 2, 4, 4 }, generator: gen);
        long[] ts = { 0, 500, 999 };
        using var t = tensor(ts);
        using var xt = s.AddNoise(x0, noise, t);
        Assert.AreEqual(ScalarType.Float32, xt.dtype);
        CollectionAssert.AreEqual(x0.shape, xt.shape);

        var x0v = x0.data<float>().ToArray();
        var nv = noise.data<float>().ToArray();
        var xv = xt.data<float>().ToArray();
        int per = 2 * 4 * 4;
        for (int i = 0; i < xv.Length; i++)
        {
            double a = abar[ts[i / per]];
            double expected = Math.Sqrt(a) * x0v[i] + Math.Sqrt(1 - a) * nv[i];
            Assert.AreEqual(expected, xv[i], 1e-6);
        }

        // float64 input stays float64 and keeps full precision.
        using var x0d = x0.to_type(ScalarType.Float64);
        using var nd = noise.to_type(ScalarType.Float64);
        using var xtd = s.AddNoise(x0d, nd, t);
        Assert.AreEqual(ScalarType.Float64, xtd.dtype);
        var xdv = xtd.data<double>().ToArray();
        for (int i = 0; i < xdv.Length; i++)
        {
            double a = abar[ts[i / per]];
            Assert.AreEqual(Math.Sqrt(a) * x0v[i] + Math.Sqrt(1 - a) * nv[i], xdv[i], 1e-12);
        }
    }
}
