using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>
/// The flow-matching samplers (diffusers' FlowMatchEulerDiscreteScheduler and FlowMatchHeunDiscreteScheduler, shift 1): their noise
/// levels, each update against a float64 recomputation, and the oracle loop (a network returning the true velocity recovers x_0).
/// </summary>
[TestClass]
public class FlowMatchSchedulerTests
{
    private static readonly DiffusionSchedule T1000 = new(NoiseSchedule.Linear, 1000);

    /// <summary>diffusers' set_timesteps: linspace(T, 1, n) / T, then 0.</summary>
    private static double[] ReferenceSigmas(int T, int n)
    {
        var s = new double[n + 1];
        for (int i = 0; i < n; i++) s[i] = (n == 1 ? T : T + (1.0 - T) * i / (n - 1)) / T;
        return s;
    }

    [TestMethod]
    [DataRow(1000, 5)]
    [DataRow(1000, 28)]
    [DataRow(50, 1)]
    public void SigmasAreDiffusersLinspace(int T, int n)
    {
        var euler = new FlowMatchEulerScheduler(new DiffusionSchedule(NoiseSchedule.Linear, T));
        euler.SetTimesteps(n);
        var expected = ReferenceSigmas(T, n);
        Assert.HasCount(n + 1, euler.Sigmas);
        for (int i = 0; i <= n; i++) Assert.AreEqual(expected[i], euler.Sigmas[i], 1e-15, $"sigma {i}");
        Assert.AreEqual(1.0, euler.Sigmas[0]);
        Assert.AreEqual(0.0, euler.Sigmas[n]);
        // The network sees sigma * T as its time, as it was trained (t * T); the loop starts from unscaled noise.
        for (int i = 0; i < n; i++) Assert.AreEqual(expected[i] * T, euler.ModelTimestep(i), 1e-9);
        Assert.AreEqual(1.0, euler.InitNoiseSigma);
        Assert.IsFalse(euler.NeedsNoise);
        Assert.AreEqual(SchedulerCapabilities.None, euler.Capabilities);
    }

    [TestMethod]
    public void HeunInterleavesTheLevelsAsDiffusers()
    {
        var heun = new FlowMatchHeunScheduler(T1000);
        heun.SetTimesteps(4);
        var s = ReferenceSigmas(1000, 4);
        // diffusers: timesteps = [t_0, t_1, t_1, t_2, t_2, t_3, t_3] (2n - 1 network calls).
        var expected = new[] { s[0], s[1], s[1], s[2], s[2], s[3], s[3] };
        Assert.HasCount(expected.Length, heun.Timesteps);
        for (int p = 0; p < expected.Length; p++) Assert.AreEqual(expected[p] * 1000, heun.ModelTimestep(p), 1e-9, $"position {p}");
        Assert.AreEqual(2, heun.Order);
        Assert.AreEqual(7, SamplerRegistry.NetworkCalls(SamplerRegistry.Get(SamplerKind.FlowMatchHeun), 4));
        Assert.AreEqual(4, SamplerRegistry.NetworkCalls(SamplerRegistry.Get(SamplerKind.FlowMatchEuler), 4));
    }

    [TestMethod]
    public void EulerStepIsTheFloat64Update()
    {
        var euler = new FlowMatchEulerScheduler(T1000);
        euler.SetTimesteps(6);
        var s = ReferenceSigmas(1000, 6);
        using var g = new TorchSharp.torch.Generator(8);
        using var x = randn(new long[] { 2, 3, 4, 4 }, dtype: float64, generator: g);
        using var v = randn(new long[] { 2, 3, 4, 4 }, dtype: float64, generator: g);
        for (int i = 0; i < 6; i++)
        {
            var output = euler.StepAt(i, v, x);
            using var prev = output.PrevSample;
            using var x0 = output.PredictedX0;
            // x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v;  x0_hat = x_i - sigma_i v.
            using var expectedPrev = x + (s[i + 1] - s[i]) * v;
            using var expectedX0 = x - s[i] * v;
            Assert.AreEqual(0.0, (prev - expectedPrev).abs().max().item<double>(), 1e-14, $"step {i}");
            Assert.AreEqual(0.0, (x0 - expectedX0).abs().max().item<double>(), 1e-14, $"x0 of step {i}");
        }
        Assert.ThrowsExactly<NotSupportedException>(() => euler.Step(v, 500, x));
    }

    [TestMethod]
    public void HeunStepIsTheFloat64Update()
    {
        var heun = new FlowMatchHeunScheduler(T1000);
        heun.SetTimesteps(3);
        var s = ReferenceSigmas(1000, 3);
        using var g = new TorchSharp.torch.Generator(9);
        var shape = new long[] { 1, 2, 3, 3 };
        using var x = randn(shape, dtype: float64, generator: g);
        using var v1 = randn(shape, dtype: float64, generator: g);
        using var v2 = randn(shape, dtype: float64, generator: g);
        using var v3 = randn(shape, dtype: float64, generator: g);

        // Position 0, predictor: x' = x_0 + (sigma_1 - sigma_0) v_0.
        var predictor = heun.StepAt(0, v1, x);
        using var xPrime = predictor.PrevSample;
        predictor.PredictedX0.Dispose();
        using var expectedPrime = x + (s[1] - s[0]) * v1;
        Assert.AreEqual(0.0, (xPrime - expectedPrime).abs().max().item<double>(), 1e-14);
        // Position 1, correction with v' at (x', sigma_1): x_1 = x_0 + (sigma_1 - sigma_0) (v_0 + v') / 2; x0_hat = x' - sigma_1 v'.
        var corrector = heun.StepAt(1, v2, xPrime);
        using var x1 = corrector.PrevSample;
        using var x0Hat = corrector.PredictedX0;
        using var expected1 = x + (s[1] - s[0]) * (v1 + v2) / 2;
        using var expectedX0 = xPrime - s[1] * v2;
        Assert.AreEqual(0.0, (x1 - expected1).abs().max().item<double>(), 1e-14);
        Assert.AreEqual(0.0, (x0Hat - expectedX0).abs().max().item<double>(), 1e-14);
        // Positions 2 and 3: the next pair; position 4, the last step, is Euler's to sigma = 0.
        heun.StepAt(2, v3, x1).PrevSample.Dispose();
        Assert.ThrowsExactly<InvalidOperationException>(() => heun.StepAt(1, v3, x1), "a correction without its predictor");
        heun.SetTimesteps(3);
        var last = heun.StepAt(4, v3, x1);
        using var lastPrev = last.PrevSample;
        last.PredictedX0.Dispose();
        using var expectedLast = x1 - s[2] * v3;
        Assert.AreEqual(0.0, (lastPrev - expectedLast).abs().max().item<double>(), 1e-14);
        heun.Dispose();
    }

    /// <summary>
    /// The generation loop with an oracle network that sees only (x, time): the true velocity of a known x_0 on the straight path,
    /// v = (x - x_0) / sigma with sigma = time / T (= eps - x_0 for x = (1 - sigma) x_0 + sigma eps). Euler integrates a straight line
    /// exactly, so it lands on x_0 to float32 rounding; Heun's correction averages two equal velocities and lands there too.
    /// </summary>
    [TestMethod]
    [DataRow(SamplerKind.FlowMatchEuler, 10)]
    [DataRow(SamplerKind.FlowMatchEuler, 1)]
    [DataRow(SamplerKind.FlowMatchHeun, 6)]
    public void OracleVelocityRecoversX0(SamplerKind kind, int steps)
    {
        var sch = SchedulerFactory.Create(T1000, new SamplerOptions { Sampler = kind, Steps = steps }, objective: DiffusionObjective.FlowMatching);
        using var gen = new TorchSharp.torch.Generator(31);
        using var x0 = randn(new long[] { 2, 1, 8, 8 }, generator: gen).clamp(-1, 1);
        var times = new List<double>();
        Tensor Oracle(Tensor x, Tensor t)
        {
            double time = t[0].to_type(ScalarType.Float64).item<double>();
            times.Add(time);
            return (x - x0) / (time / 1000.0);
        }

        using var result = DiffusionSampler.Sample(Oracle, sch, new uint[] { 1, 2 }, new long[] { 1, 8, 8 }, CPU);
        using var err = (result - x0).abs().max();
        Assert.IsLessThan(1e-5, err.item<float>());
        Assert.AreEqual(1000.0, times[0], "the first call sees pure noise at time T");
        Assert.HasCount(sch.Timesteps.Count, times);
        (sch as IDisposable)?.Dispose();
    }

    [TestMethod]
    public void AddNoiseIsTheStraightPathAtTheTrainingSigmas()
    {
        var euler = new FlowMatchEulerScheduler(new DiffusionSchedule(NoiseSchedule.Linear, 50));
        using var x0 = full(new long[] { 2, 1, 2, 2 }, 0.5);
        using var noise = full(new long[] { 2, 1, 2, 2 }, -1.0);
        using var t = tensor(new long[] { 0, 49 });
        using var xt = euler.AddNoise(x0, noise, t);
        // sigma_t = (t + 1) / T: x = (1 - sigma) x_0 + sigma noise.
        Assert.AreEqual((1 - 1 / 50.0) * 0.5 + 1 / 50.0 * -1.0, xt[0, 0, 0, 0].item<float>(), 1e-6);
        Assert.AreEqual(-1.0, xt[1, 0, 1, 1].item<float>(), 1e-6);
    }

    [TestMethod]
    [DataRow(SamplerKind.FlowMatchEuler, 0)]
    [DataRow(SamplerKind.FlowMatchEuler, 3)]
    [DataRow(SamplerKind.FlowMatchHeun, 4)]
    public void AddNoiseAtIsThePathAtTheLoopSigma(SamplerKind kind, int index)
    {
        var sch = SchedulerFactory.Create(T1000, new SamplerOptions { Sampler = kind, Steps = 5 }, objective: DiffusionObjective.FlowMatching);
        var s = ReferenceSigmas(1000, 5);
        double sigma = kind == SamplerKind.FlowMatchHeun ? s[(index + 1) / 2] : s[index];
        using var g = new TorchSharp.torch.Generator(12);
        using var x0 = randn(new long[] { 2, 1, 3, 3 }, dtype: float64, generator: g);
        using var noise = randn(new long[] { 2, 1, 3, 3 }, dtype: float64, generator: g);
        using var got = sch.AddNoiseAt(x0, noise, index);
        using var expected = (1 - sigma) * x0 + sigma * noise;         // diffusers' scale_noise
        Assert.AreEqual(0.0, (got - expected).abs().max().item<double>(), 1e-14);
        (sch as IDisposable)?.Dispose();
    }

    [TestMethod]
    public void ASamplerOfTheOtherObjectiveIsRefusedNamingBoth()
    {
        var e = Assert.ThrowsExactly<ArgumentException>(() =>
            SchedulerFactory.Create(T1000, new SamplerOptions { Sampler = SamplerKind.Ddim }, objective: DiffusionObjective.FlowMatching));
        StringAssert.Contains(e.Message, "Ddim");
        StringAssert.Contains(e.Message, "FlowMatching");
        StringAssert.Contains(e.Message, "FlowMatchEuler");
        e = Assert.ThrowsExactly<ArgumentException>(() => SchedulerFactory.Create(T1000, new SamplerOptions { Sampler = SamplerKind.FlowMatchHeun }));
        StringAssert.Contains(e.Message, "FlowMatchHeun");
        StringAssert.Contains(e.Message, "Ddpm");
    }
}
