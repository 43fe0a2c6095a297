using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Samplers;

/// <summary>The sampler registry: one row per <see cref="SamplerKind"/>, read by the options, the factory and the loops' capability checks.</summary>
[TestClass]
public class SamplerRegistryTests
{
    private static readonly DiffusionSchedule Linear = new(NoiseSchedule.Linear, 1000);

    [TestMethod]
    public void EverySamplerKindHasExactlyOneRow_WithAUniqueCliName()
    {
        foreach (var kind in Enum.GetValues<SamplerKind>())
            Assert.AreEqual(1, SamplerRegistry.All.Count(r => r.Kind == kind), kind.ToString());
        Assert.HasCount(SamplerRegistry.All.Count, SamplerRegistry.CliNames.Distinct());
        CollectionAssert.IsSubsetOf(new[] { "ddpm", "ddim", "dpm-solver++", "euler-karras", "heun-karras", "euler-ancestral",
                "dpm-solver++-karras", "dpm-solver++-sde", "unipc" },
            SamplerRegistry.CliNames.ToArray());
    }

    [TestMethod]
    [DataRow(SamplerKind.EulerKarras, 25, 25)]
    [DataRow(SamplerKind.HeunKarras, 18, 35)]
    [DataRow(SamplerKind.EulerAncestral, 30, 30)]
    [DataRow(SamplerKind.DpmSolverPlusPlus, 20, 20)]
    [DataRow(SamplerKind.DpmSolverPlusPlusKarras, 20, 20)]
    [DataRow(SamplerKind.DpmSolverPlusPlusSde, 25, 25)]
    [DataRow(SamplerKind.UniPC, 10, 10)]
    public void FactoryUsesTheRowsDefaults(SamplerKind kind, int steps, int networkCalls)
    {
        var options = new SamplerOptions { Sampler = kind };
        Assert.AreEqual(steps, options.ResolveSteps(1000));
        var sch = SchedulerFactory.Create(Linear, options);
        Assert.HasCount(networkCalls, sch.Timesteps);
        Assert.AreEqual(SamplerRegistry.Get(kind).Capabilities, sch.Capabilities);
        (sch as IDisposable)?.Dispose();
    }

    [TestMethod]
    public void UnknownSamplerIsRejectedNamingTheKnownOnes()
    {
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new SamplerOptions { Sampler = (SamplerKind)42 }.Validate(1000));
        StringAssert.Contains(e.Message, "EulerKarras");
    }

    [TestMethod]
    [DataRow(SamplerKind.EulerKarras)]
    [DataRow(SamplerKind.HeunKarras)]
    [DataRow(SamplerKind.EulerAncestral)]
    public void RePaintAndClassifierGuidanceRefuseSigmaSpaceSamplers_NamingThemAndTheSupportedOnes(SamplerKind kind)
    {
        var sch = SchedulerFactory.Create(Linear, new SamplerOptions { Sampler = kind, Steps = 5 });
        using var known = zeros(1, 1, 4, 4);
        using var mask = ones(1, 1, 4, 4);
        var e = Assert.ThrowsExactly<ArgumentException>(() => RePaintSampler.Sample((x, _) => x, sch, known, mask, new uint[] { 1 }, 2, 2, CPU));
        StringAssert.Contains(e.Message, SamplerRegistry.Get(kind).DisplayName);
        StringAssert.Contains(e.Message, "DDPM, DDIM");
        e = Assert.ThrowsExactly<ArgumentException>(() => ClassifierGuidance.CheckSupported(sch));
        StringAssert.Contains(e.Message, SamplerRegistry.Get(kind).DisplayName);
        StringAssert.Contains(e.Message, "DDPM, DDIM, DPM-Solver++(2M)");
    }

    /// <summary>
    /// The generation loop with an oracle network that sees only (x_in, t): the true noise of a known x_0, with alpha_bar read from the
    /// continuous timestep t (log-linear sigma between training timesteps). Exercises init_noise_sigma, the input scaling and the
    /// float32 time input end to end.
    /// </summary>
    [TestMethod]
    [DataRow(SamplerKind.EulerKarras, 12)]
    [DataRow(SamplerKind.HeunKarras, 8)]
    [DataRow(SamplerKind.EulerAncestral, 40)]
    public void GenerationLoopWithAnOracleNetworkRecoversX0(SamplerKind kind, int steps)
    {
        var sch = SchedulerFactory.Create(Linear, new SamplerOptions { Sampler = kind, Steps = steps, ClipSample = false });
        var sigmas = SigmaSpace.TrainingSigmas(Linear);
        using var gen = new Generator(21);
        using var x0 = randn(new long[] { 2, 1, 8, 8 }, generator: gen).clamp(-1, 1);
        bool sawContinuous = false;
        Tensor Oracle(Tensor xIn, Tensor t)
        {
            sawContinuous |= t.is_floating_point();
            double sigma = SigmaSpace.SigmaAtLog(t[0].to_type(ScalarType.Float64).item<double>(), sigmas);
            double abar = 1 / (sigma * sigma + 1);
            return (xIn - x0 * Math.Sqrt(abar)) / Math.Sqrt(1 - abar);
        }

        using var result = DiffusionSampler.Sample(Oracle, sch, new uint[] { 1, 2 }, new long[] { 1, 8, 8 }, CPU);
        using var err = (result - x0).abs().max();
        // Euler ancestral's sigmas are interpolated linearly, the oracle's in log space: a small mismatch, hence the tolerance.
        Assert.IsLessThan(kind == SamplerKind.EulerAncestral ? 2e-2 : 1e-3, err.item<float>());
        Assert.IsTrue(sawContinuous, "the network should see continuous timesteps");
    }

    /// <summary>
    /// The generation loop with an oracle network that sees only (x_t, t) for the multistep solvers on timestep levels: the true noise
    /// of a known x_0 at alpha_bar_t. The SDE solver's noise comes from the loop's per-image generators.
    /// </summary>
    [TestMethod]
    [DataRow(SamplerKind.DpmSolverPlusPlusSde, 15)]
    [DataRow(SamplerKind.UniPC, 8)]
    [DataRow(SamplerKind.DpmSolverPlusPlus, 8)]
    public void GenerationLoopWithAnOracleNetworkRecoversX0_MultistepSolvers(SamplerKind kind, int steps)
    {
        var sch = SchedulerFactory.Create(Linear, new SamplerOptions { Sampler = kind, Steps = steps, ClipSample = false });
        using var gen = new Generator(22);
        using var x0 = randn(new long[] { 2, 1, 8, 8 }, generator: gen).clamp(-1, 1);
        Tensor Oracle(Tensor xIn, Tensor t)
        {
            Assert.AreEqual(ScalarType.Int64, t.dtype, "VP solvers pass integer timesteps");
            double abar = Linear.AlphaBar((int)t[0].item<long>());
            return (xIn - x0 * Math.Sqrt(abar)) / Math.Sqrt(1 - abar);
        }

        using var result = DiffusionSampler.Sample(Oracle, sch, new uint[] { 1, 2 }, new long[] { 1, 8, 8 }, CPU);
        using var err = (result - x0).abs().max();
        Assert.IsLessThan(1e-3, err.item<float>());
        (sch as IDisposable)?.Dispose();
    }
}
