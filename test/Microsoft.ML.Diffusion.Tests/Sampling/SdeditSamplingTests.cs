using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Tests.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Samplers;

/// <summary>
/// SDEdit (Meng et al. 2022) in the sampling loop: where it starts (diffusers' get_timesteps), what it starts from (q(x_t | x_0) with the
/// seed's first draw), and that an oracle network (the true noise) brings the noised image back to x_0.
/// </summary>
[TestClass]
public sealed class SdeditSamplingTests
{
    private const int T = 1000;
    private static readonly DiffusionSchedule Linear = new(NoiseSchedule.Linear, T);
    private static readonly double[] ReferenceAlphaBars = ReferenceSchedules.AlphaBars(ReferenceSchedules.LinearBetas(T));
    private static readonly long[] Shape = { 1, 4, 4 };

    /// <summary>diffusers' StableDiffusionImg2ImgPipeline.get_timesteps, in Python's float64 arithmetic on the number as typed:
    /// init_timestep = min(int(N * s), N); t_start = max(N - init_timestep, 0).</summary>
    [TestMethod]
    [DataRow(50, 0.8f, 10)]
    [DataRow(50, 0.6f, 20)]
    [DataRow(50, 1.0f, 0)]
    [DataRow(50, 0f, 50)]
    [DataRow(50, 0.01f, 50)]     // int(0.5) = 0: no step runs
    [DataRow(50, 0.02f, 49)]
    [DataRow(10, 0.7f, 3)]       // 10 * 0.7 = 7.000000000000001 in Python; the float 0.7f alone would give 6.99999988 -> 6
    [DataRow(10, 0.3f, 7)]
    [DataRow(100, 0.29f, 72)]    // 100 * 0.29 = 28.999999999999996 in Python: 28 steps
    [DataRow(3, 0.5f, 2)]
    [DataRow(1, 0.99f, 1)]
    [DataRow(1, 1f, 0)]
    [DataRow(1000, 0.001f, 999)]
    public void StartStep_IsDiffusersGetTimesteps(int steps, float strength, int expected)
    {
        Assert.AreEqual(expected, SdeditSchedule.StartStep(steps, strength));
        Assert.AreEqual(steps - expected, SdeditSchedule.DenoisingSteps(steps, strength));
    }

    [TestMethod]
    public void StartIndex_IsTStartTimesTheOrder_AtMostTheLoopLength()
    {
        Assert.AreEqual(20, SdeditSchedule.StartIndex(20, 1, 50));
        Assert.AreEqual(6, SdeditSchedule.StartIndex(3, 2, 19));      // Heun, 10 steps: 19 positions
        Assert.AreEqual(19, SdeditSchedule.StartIndex(10, 2, 19));     // strength 0: no position left
        Assert.AreEqual(50, SdeditSchedule.StartIndex(50, 1, 50));
    }

    [TestMethod]
    [DataRow(float.NaN)]
    [DataRow(-0.1f)]
    [DataRow(1.01f)]
    [DataRow(float.PositiveInfinity)]
    public void BadStrength_IsRejectedNamingTheSetting(float strength)
    {
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => SdeditSchedule.StartStep(50, strength));
        StringAssert.Contains(e.Message, "[0, 1]");
        var o = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new ImageToImageOptions { Strength = strength }.Validate(T));
        StringAssert.Contains(o.Message, "ImageToImageOptions.Strength");
    }

    private static Tensor Image(int n)
    {
        using var g = new TorchSharp.torch.Generator(5);
        return (rand(new long[] { n, 1, 4, 4 }, generator: g) * 1.6 - 0.8).to_type(float32);
    }

    /// <summary>DDIM, 50 steps, strength 0.6: t_start = 20, so the loop starts at timestep 980 - 20 * 20 = 580 and makes 30 network calls; the
    /// first network input is sqrt(abar_580) x_0 + sqrt(1 - abar_580) eps, eps being the seed's first draw (its x_T in generation).</summary>
    [TestMethod]
    public void LoopStartsAtTStart_FromTheImageNoisedWithTheSeedsFirstDraw()
    {
        var scheduler = SchedulerFactory.Create(Linear, new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 50, ClipSample = false });
        int start = SdeditSchedule.StartIndex(SdeditSchedule.StartStep(50, 0.6f), scheduler.Order, scheduler.Timesteps.Count);
        Assert.AreEqual(580, scheduler.Timesteps[start]);
        uint[] seeds = { 7, 8 };
        using var x0 = Image(2);
        var inputs = new List<Tensor>();
        var times = new List<long>();
        using var result = DiffusionSampler.Sample((x, t) =>
        {
            if (inputs.Count == 0) inputs.Add(x.clone().MoveToOuterDisposeScope());
            times.Add(t[0].item<long>());
            return zeros_like(x);
        }, scheduler, seeds, Shape, CPU, initialImage: x0, startIndex: start);
        Assert.HasCount(30, times);
        Assert.AreEqual(580L, times[0]);
        Assert.AreEqual(0L, times[^1]);

        double abar = ReferenceAlphaBars[580];
        var x0d = x0.to_type(float64).data<double>().ToArray();
        var first = inputs[0].to_type(float64).data<double>().ToArray();
        for (int i = 0; i < 2; i++)
        {
            using var eps = DiffusionSampler.InitialNoise(seeds[i], Shape);
            var e = eps.to_type(float64).data<double>().ToArray();
            for (int p = 0; p < 16; p++)
                Assert.AreEqual(Math.Sqrt(abar) * x0d[16 * i + p] + Math.Sqrt(1 - abar) * e[p], first[16 * i + p], 2e-6, $"image {i}, pixel {p}");
        }
        inputs[0].Dispose();
    }

    /// <summary>An oracle network that returns the noise that x_t and the known x_0 imply recovers x_0 from the noised image (DDIM eq. 12 is
    /// then exact at every step); DPM-Solver++ too.</summary>
    [TestMethod]
    [DataRow(SamplerKind.Ddim, 50, 0.6f)]
    [DataRow(SamplerKind.Ddim, 20, 1.0f)]
    [DataRow(SamplerKind.DpmSolverPlusPlus, 20, 0.5f)]
    public void OracleNetwork_RecoversTheImage(SamplerKind kind, int steps, float strength)
    {
        var scheduler = SchedulerFactory.Create(Linear, new SamplerOptions { Sampler = kind, Steps = steps, ClipSample = false });
        int start = SdeditSchedule.StartIndex(SdeditSchedule.StartStep(steps, strength), scheduler.Order, scheduler.Timesteps.Count);
        using var x0 = Image(2);
        using var result = DiffusionSampler.Sample((x, t) =>
        {
            double abar = ReferenceAlphaBars[t[0].item<long>()];
            return ((x - x0 * Math.Sqrt(abar)) / Math.Sqrt(1 - abar)).to_type(float32);
        }, scheduler, new uint[] { 1, 2 }, Shape, CPU, initialImage: x0, startIndex: start);
        using var err = (result - x0).abs().max();
        Assert.IsLessThan(1e-4, err.item<float>(), $"{kind}, {steps} steps, strength {strength}");
        (scheduler as IDisposable)?.Dispose();
    }

    /// <summary>Every sampler of the registry runs SDEdit: min(int(N s), N) solver steps, i.e. the network calls of that many steps (2 k - 1 for
    /// Heun, whose loop starts at position 2 t_start), and a finite result that differs from the input.</summary>
    [TestMethod]
    public void EverySampler_RunsTheLastStepsOfItsLoop()
    {
        using var x0 = Image(2);
        foreach (var row in SamplerRegistry.All)
        {
            var scheduler = SchedulerFactory.Create(Linear, new SamplerOptions { Sampler = row.Kind, Steps = 10 });
            int tStart = SdeditSchedule.StartStep(10, 0.6f);
            int start = SdeditSchedule.StartIndex(tStart, scheduler.Order, scheduler.Timesteps.Count);
            int calls = 0;
            using var result = DiffusionSampler.Sample((x, t) => { calls++; return x * 0.05; }, scheduler, new uint[] { 1, 2 }, Shape, CPU,
                initialImage: x0, startIndex: start);
            Assert.AreEqual(4, tStart);
            Assert.AreEqual(SamplerRegistry.NetworkCalls(row, 10 - tStart), calls, row.DisplayName);
            Assert.IsTrue(result.isfinite().all().item<bool>(), row.DisplayName);
            Assert.IsFalse((result == x0).all().item<bool>(), row.DisplayName);
            (scheduler as IDisposable)?.Dispose();
        }
    }

    /// <summary>Strength 0 (no position left) returns x_0 itself; strength 1 (position 0) is generation from the seeds' x_T, ignoring the image.</summary>
    [TestMethod]
    public void EndPoints_ReturnTheImage_OrGenerate()
    {
        var scheduler = SchedulerFactory.Create(Linear, new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 10 });
        using var x0 = Image(2);
        uint[] seeds = { 3, 4 };
        int calls = 0;
        Func<Tensor, Tensor, Tensor> net = (x, t) => { calls++; return x * 0.1; };
        using var none = DiffusionSampler.Sample(net, scheduler, seeds, Shape, CPU, initialImage: x0, startIndex: scheduler.Timesteps.Count);
        Assert.AreEqual(0, calls);
        Assert.IsTrue((none == x0).all().item<bool>());
        using var whole = DiffusionSampler.Sample(net, scheduler, seeds, Shape, CPU, initialImage: x0, startIndex: 0);
        using var generated = DiffusionSampler.Sample(net, scheduler, seeds, Shape, CPU);
        Assert.IsTrue((whole == generated).all().item<bool>());
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => DiffusionSampler.Sample(net, scheduler, seeds, Shape, CPU, startIndex: 2));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => DiffusionSampler.Sample(net, scheduler, seeds, Shape, CPU, initialImage: x0, startIndex: 11));
    }
}
