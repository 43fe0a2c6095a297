using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Tests.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>
/// IDiffusionScheduler.AddNoiseAt, the start of SDEdit (Meng et al. 2022): the forward process at a loop position's noise level,
/// against float64 recomputations from the reference schedule (DDPM eq. 4 for VP samplers, x_0 + sigma eps in sigma space).
/// </summary>
[TestClass]
public sealed class AddNoiseAtTests
{
    private const int T = 1000;
    private static readonly DiffusionSchedule Linear = new(NoiseSchedule.Linear, T);
    private static readonly double[] ReferenceAlphaBars = ReferenceSchedules.AlphaBars(ReferenceSchedules.LinearBetas(T));

    private static IDiffusionScheduler Create(SamplerKind kind, int steps, bool karras = false) =>
        SchedulerFactory.Create(Linear, new SamplerOptions { Sampler = kind, Steps = steps, ClipSample = false, UseKarrasSigmas = karras });

    /// <summary>x0 and eps [2, 1, 4, 4] as float32 tensors and as float64 arrays.</summary>
    private static (Tensor X0, Tensor Eps, double[] X0d, double[] Epsd) Inputs()
    {
        using var g = new TorchSharp.torch.Generator(11);
        var x0 = rand(new long[] { 2, 1, 4, 4 }, generator: g) * 2 - 1;
        var eps = randn(new long[] { 2, 1, 4, 4 }, generator: g);
        return (x0, eps, x0.to_type(float64).data<double>().ToArray(), eps.to_type(float64).data<double>().ToArray());
    }

    private static void AssertClose(double[] expected, Tensor actual, double tolerance, string what)
    {
        var a = actual.to_type(float64).data<double>().ToArray();
        Assert.HasCount(expected.Length, a);
        for (int i = 0; i < a.Length; i++)
            Assert.AreEqual(expected[i], a[i], tolerance * Math.Max(1.0, Math.Abs(expected[i])), $"{what}, element {i}");
    }

    [TestMethod]
    [DataRow(SamplerKind.Ddpm, 1000, 0)]
    [DataRow(SamplerKind.Ddpm, 1000, 400)]
    [DataRow(SamplerKind.Ddim, 50, 0)]
    [DataRow(SamplerKind.Ddim, 50, 20)]
    [DataRow(SamplerKind.Ddim, 50, 49)]
    [DataRow(SamplerKind.DpmSolverPlusPlus, 20, 7)]
    public void VpSamplers_AreDdpmEq4AtTheTimestepOfThePosition(SamplerKind kind, int steps, int index)
    {
        var scheduler = Create(kind, steps);
        var (x0, eps, x0d, epsd) = Inputs();
        using (x0)
        using (eps)
        {
            double abar = ReferenceAlphaBars[scheduler.Timesteps[index]];
            var expected = x0d.Select((x, i) => Math.Sqrt(abar) * x + Math.Sqrt(1 - abar) * epsd[i]).ToArray();
            using var noised = scheduler.AddNoiseAt(x0, eps, index);
            AssertClose(expected, noised, 2e-6, $"{kind} position {index} (t = {scheduler.Timesteps[index]})");
            // The same as the training forward process at that timestep.
            using var t = full(new long[] { 2 }, scheduler.Timesteps[index], dtype: int64);
            using var training = scheduler.AddNoise(x0, eps, t);
            AssertClose(training.to_type(float64).data<double>().ToArray(), noised, 1e-6, "AddNoise at the same timestep");
        }
        (scheduler as IDisposable)?.Dispose();
    }

    /// <summary>DPM-Solver++ with Karras sigmas noises to the Karras level itself (diffusers reads sigmas[step_index]), not to its rounded timestep's.</summary>
    [TestMethod]
    public void DpmSolverWithKarrasSigmas_UsesTheLevelOfThePosition()
    {
        const int n = 10, index = 4;
        using var scheduler = (VpMultistepScheduler)Create(SamplerKind.DpmSolverPlusPlus, n, karras: true);
        var (x0, eps, x0d, epsd) = Inputs();
        using (x0)
        using (eps)
        {
            double sigma = SigmaSpaceReference.Karras(n)[index];
            double abar = 1 / (sigma * sigma + 1);
            var expected = x0d.Select((x, i) => Math.Sqrt(abar) * x + Math.Sqrt(1 - abar) * epsd[i]).ToArray();
            using var noised = scheduler.AddNoiseAt(x0, eps, index);
            AssertClose(expected, noised, 2e-6, "Karras level 4");
        }
    }

    /// <summary>Euler and Heun on Karras sigmas: x_0 + sigma eps, whose network input x / sqrt(sigma^2 + 1) is DDPM eq. 4 at alpha_bar = 1 / (sigma^2 + 1).</summary>
    [TestMethod]
    [DataRow(SamplerKind.EulerKarras, 10, 3, 3)]
    [DataRow(SamplerKind.HeunKarras, 10, 6, 3)]        // position 2 i of a Heun loop is the predictor at sigma_i
    [DataRow(SamplerKind.HeunKarras, 10, 5, 3)]        // position 2 i - 1, its correction, sees sigma_i too
    public void SigmaSpaceSamplers_AreX0PlusSigmaEps(SamplerKind kind, int steps, int index, int level)
    {
        var scheduler = Create(kind, steps);
        var (x0, eps, x0d, epsd) = Inputs();
        using (x0)
        using (eps)
        {
            double sigma = SigmaSpaceReference.Karras(steps)[level];
            var expected = x0d.Select((x, i) => x + sigma * epsd[i]).ToArray();
            using var noised = scheduler.AddNoiseAt(x0, eps, index);
            AssertClose(expected, noised, 2e-6, $"{kind} position {index}");
            double abar = 1 / (sigma * sigma + 1);
            var vp = x0d.Select((x, i) => Math.Sqrt(abar) * x + Math.Sqrt(1 - abar) * epsd[i]).ToArray();
            using var input = scheduler.ScaleModelInput(noised, index);
            AssertClose(vp, input, 2e-6, "the network's input");
        }
        (scheduler as IDisposable)?.Dispose();
    }

    [TestMethod]
    public void PositionOutsideTheLoopIsRejected()
    {
        var scheduler = Create(SamplerKind.Ddim, 10);
        using var x = zeros(1, 1, 2, 2);
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => scheduler.AddNoiseAt(x, x, 10));
        StringAssert.Contains(e.Message, "0 and 9");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Create(SamplerKind.EulerKarras, 10).AddNoiseAt(x, x, -1));
        using var wrong = zeros(1, 1, 2, 3);
        Assert.ThrowsExactly<ArgumentException>(() => scheduler.AddNoiseAt(x, wrong, 0));
    }
}
