using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Inpainting;

/// <summary>RePaint's loop with analytic denoisers: known pixels kept, network calls counted, batch independence, exact results for known data.</summary>
[TestClass]
public class RePaintSamplerTests
{
    private static readonly DiffusionSchedule Linear = new(NoiseSchedule.Linear, 1000);

    /// <summary>A left-half mask [B, 1, H, W]: 1 keeps.</summary>
    private static Tensor LeftHalf(int b, int size)
    {
        var m = zeros(b, 1, size, size);
        m.narrow(3, 0, size / 2).fill_(1);
        return m;
    }

    [TestMethod]
    public void CountsNetworkCallsAndKeepsKnownPixels()
    {
        foreach (var (steps, jump, resamplings) in new[] { (20, 5, 3), (20, 5, 1), (12, 4, 2) })
        {
            var scheduler = new DdpmScheduler(Linear);
            scheduler.SetTimesteps(steps);
            int calls = 0;
            Tensor Counting(Tensor x, Tensor t)
            {
                calls++;
                return zeros_like(x);
            }

            using var known = rand(2, 1, 8, 8) * 2 - 1;
            using var mask = LeftHalf(2, 8);
            var reports = new List<SamplingProgress>();
            using var result = RePaintSampler.Sample(Counting, scheduler, known, mask, new uint[] { 1, 2 }, jump, resamplings, CPU,
                new Progress(reports));
            Assert.AreEqual(RePaintSchedule.NetworkCalls(steps, jump, resamplings), calls, $"steps {steps}, j {jump}, r {resamplings}");
            Assert.AreEqual(RePaintSchedule.Jump(steps, jump, resamplings).Length, reports.Count);
            Assert.IsTrue(known.narrow(3, 0, 4).allclose(result.narrow(3, 0, 4), rtol: 0, atol: 0), "known pixels must be copied exactly");
            Assert.IsFalse(known.narrow(3, 4, 4).allclose(result.narrow(3, 4, 4), rtol: 0, atol: 1e-3), "the filled half is sampled");
        }
    }

    [TestMethod]
    public void OracleDenoiserFillsTheTrueImage()
    {
        // Data distribution: a single image x*. The exact epsilon prediction is (x_t - sqrt(abar_t) x*) / sqrt(1 - abar_t), so the
        // filled region must come out as x* however the jumps and undo steps mix the noise.
        using var target = rand(new long[] { 1, 1, 8, 8 }, generator: new Generator(5)) * 1.6 - 0.8;
        var scheduler = new DdpmScheduler(Linear);
        scheduler.SetTimesteps(50);
        Tensor Oracle(Tensor x, Tensor t)
        {
            double abar = Linear.AlphaBar((int)t[0].item<long>());
            return (x - Math.Sqrt(abar) * target) / Math.Sqrt(1 - abar);
        }

        using var known = target.clone();
        known.narrow(3, 4, 4).fill_(0);                                  // the filled half's values are not used
        using var mask = LeftHalf(1, 8);
        using var result = RePaintSampler.Sample(Oracle, scheduler, known, mask, new uint[] { 7 }, 5, 3, CPU);
        Assert.IsTrue(result.allclose(target, rtol: 0, atol: 1e-4), $"max error {(result - target).abs().max().item<float>()}");
    }

    [TestMethod]
    public void GaussianDataKeepsUnitVarianceThroughJumps()
    {
        // x_0 ~ N(0, I): E[eps | x_t] = sqrt(1 - abar_t) x_t and DDPM's reverse step with sigma^2 = beta is exact (Ho et al. 2020,
        // section 3.2), so the filled pixels must again be N(0, 1) if the undo steps (eq. 9) keep each level's marginal.
        var scheduler = new DdpmScheduler(Linear, clipSample: false, variance: VarianceType.FixedLarge);
        scheduler.SetTimesteps(50);
        Tensor Exact(Tensor x, Tensor t) => x * Math.Sqrt(1 - Linear.AlphaBar((int)t[0].item<long>()));
        using var known = randn(new long[] { 4, 1, 32, 32 }, generator: new Generator(3));
        using var mask = LeftHalf(4, 32);
        using var result = RePaintSampler.Sample(Exact, scheduler, known, mask, new uint[] { 1, 2, 3, 4 }, 5, 4, CPU);
        using var filled = result.narrow(3, 16, 16);
        double std = filled.std().item<float>(), mean = filled.mean().item<float>();
        Assert.IsTrue(Math.Abs(std - 1) < 0.05, $"std {std}");
        Assert.IsTrue(Math.Abs(mean) < 0.05, $"mean {mean}");
    }

    [TestMethod]
    public void AnImageDoesNotDependOnItsBatch()
    {
        var scheduler = new DdpmScheduler(Linear);
        scheduler.SetTimesteps(10);
        Tensor Net(Tensor x, Tensor t) => x * 0.3;
        using var known = rand(new long[] { 3, 1, 8, 8 }, generator: new Generator(9)) * 2 - 1;
        using var mask = LeftHalf(3, 8);
        using var all = RePaintSampler.Sample(Net, scheduler, known, mask, new uint[] { 10, 11, 12 }, 3, 2, CPU);
        using var one = RePaintSampler.Sample(Net, scheduler, known.narrow(0, 1, 1), mask.narrow(0, 1, 1), new uint[] { 11 }, 3, 2, CPU);
        Assert.IsTrue(all.narrow(0, 1, 1).allclose(one, rtol: 0, atol: 0));
    }

    [TestMethod]
    public void CancellationStopsBetweenSteps()
    {
        var scheduler = new DdpmScheduler(Linear);
        scheduler.SetTimesteps(10);
        using var cts = new CancellationTokenSource();
        int calls = 0;
        Tensor Net(Tensor x, Tensor t)
        {
            if (++calls == 3) cts.Cancel();
            return zeros_like(x);
        }

        using var known = zeros(1, 1, 8, 8);
        using var mask = LeftHalf(1, 8);
        Assert.ThrowsExactly<OperationCanceledException>(() =>
            RePaintSampler.Sample(Net, scheduler, known, mask, new uint[] { 1 }, 3, 2, CPU, cancellationToken: cts.Token));
        Assert.AreEqual(3, calls);
    }

    [TestMethod]
    public void MultistepSolverAndBadMaskAreRejected()
    {
        using var known = zeros(1, 1, 8, 8);
        using var mask = LeftHalf(1, 8);
        var dpm = new DpmSolverMultistepScheduler(Linear);
        var e = Assert.ThrowsExactly<ArgumentException>(() => RePaintSampler.Sample((x, _) => x, dpm, known, mask, new uint[] { 1 }, 3, 2, CPU));
        StringAssert.Contains(e.Message, "multistep");
        var ddpm = new DdpmScheduler(Linear);
        using var badMask = zeros(1, 1, 4, 4);
        e = Assert.ThrowsExactly<ArgumentException>(() => RePaintSampler.Sample((x, _) => x, ddpm, known, badMask, new uint[] { 1 }, 3, 2, CPU));
        StringAssert.Contains(e.Message, "[1, 1, 4, 4]");
    }

    private sealed class Progress(List<SamplingProgress> reports) : IProgress<SamplingProgress>
    {
        public void Report(SamplingProgress value) => reports.Add(value);
    }
}
