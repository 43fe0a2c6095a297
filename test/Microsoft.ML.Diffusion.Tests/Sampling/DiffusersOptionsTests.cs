using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Tests.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Samplers;

/// <summary>
/// diffusers' scheduler options on <see cref="SamplerOptions"/> (set_alpha_to_one, final_sigmas_type, lower_order_final,
/// dynamic_thresholding_ratio, sample_max_value, use_karras_sigmas, use_lu_lambdas): what each changes, their validation, and
/// their persistence in the model config.
/// </summary>
[TestClass]
public class DiffusersOptionsTests
{
    private static readonly DiffusionSchedule Linear = new(NoiseSchedule.Linear, 1000);

    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void Ddim_SetAlphaToOne_ChoosesTheLastStepsTarget(bool setAlphaToOne)
    {
        var abar = ReferenceSchedules.AlphaBars(ReferenceSchedules.LinearBetas(1000));
        var sch = SchedulerFactory.Create(Linear, new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 10, ClipSample = false, SetAlphaToOne = setAlphaToOne });
        double[] x = { 0.4, -0.2, 0.9, -1.3 }, eps = { 0.3, 0.8, -0.5, 0.1 };
        using var xt = tensor(x, new long[] { 1, 1, 2, 2 }, float64);
        using var e = tensor(eps, new long[] { 1, 1, 2, 2 }, float64);
        using var got = sch.Step(e, 0, xt);                                      // leading: the last timestep is 0
        // DDIM eq. 12 with eta = 0: sqrt(a_prev) x0 + sqrt(1 - a_prev) eps, a_prev = 1 or alpha_bar_0 (diffusers' final_alpha_cumprod).
        double aPrev = setAlphaToOne ? 1.0 : abar[0];
        var values = got.data<double>().ToArray();
        for (int k = 0; k < 4; k++)
        {
            double x0 = (x[k] - Math.Sqrt(1 - abar[0]) * eps[k]) / Math.Sqrt(abar[0]);
            Assert.AreEqual(Math.Sqrt(aPrev) * x0 + Math.Sqrt(1 - aPrev) * eps[k], values[k], 1e-12);
        }
    }

    [TestMethod]
    [DataRow(0.87, 0.5)]
    [DataRow(0.9, 1.5)]
    [DataRow(0.995, double.PositiveInfinity)]
    public void DynamicThreshold_RatioAndSampleMaxValue_AsDiffusers(double ratio, double maxValue)
    {
        int n = 20;
        var values = Enumerable.Range(0, 2 * n).Select(i => i < n ? -0.5 + i / (double)(n - 1) : -3 + 0.4 * (i - n)).ToArray();
        var expected = new double[2 * n];
        for (int b = 0; b < 2; b++)
        {
            var abs = values.Skip(b * n).Take(n).Select(Math.Abs).OrderBy(v => v).ToArray();
            double pos = ratio * (n - 1);
            int lo = (int)Math.Floor(pos);
            double q = abs[lo] + (pos - lo) * (abs[Math.Min(lo + 1, n - 1)] - abs[lo]);
            double s = Math.Min(Math.Max(q, 1), maxValue);                       // torch.clamp(q, min = 1, max = sample_max_value)
            for (int i = 0; i < n; i++) expected[b * n + i] = Math.Clamp(values[b * n + i], -s, s) / s;
        }

        using var x = tensor(values, new long[] { 2, 1, 4, 5 }, float64);
        using var got = SchedulerCore.DynamicThreshold(x, ratio, maxValue);
        var g = got.data<double>().ToArray();
        for (int i = 0; i < g.Length; i++) Assert.AreEqual(expected[i], g[i], 1e-12, $"element {i}");
    }

    [TestMethod]
    public void ThresholdSettingsReachEveryScheduler()
    {
        var options = new SamplerOptions { DynamicThresholding = true, DynamicThresholdingRatio = 0.9, SampleMaxValue = 1.5, Steps = 5 };
        using var x0 = full(new long[] { 1, 1, 2, 2 }, 4.0, dtype: float64);         // |x0| = 4 everywhere: s = min(4, 1.5), x0 -> 1.5 / 1.5
        using var xt = zeros(new long[] { 1, 1, 2, 2 }, dtype: float64);
        // The samplers of DDPM models (flow-matching samplers do not go through x_0 and take no thresholding).
        foreach (var row in SamplerRegistry.All.Where(r => r.Objective == DiffusionObjective.Ddpm))
        {
            options.Sampler = row.Kind;
            var sch = SchedulerFactory.Create(Linear, options, PredictionType.Sample);
            var step = sch.StepAt(0, x0, sch.ScaleModelInput(xt, 0), sch.NeedsNoise ? xt : null);
            Assert.AreEqual(1.0, step.PredictedX0.max().item<double>(), 1e-12, row.DisplayName);
            step.PrevSample.Dispose();
            if (!ReferenceEquals(step.PredictedX0, step.PrevSample)) step.PredictedX0.Dispose();
            (sch as IDisposable)?.Dispose();
        }
    }

    [TestMethod]
    public void FinalSigmasTypeAndKarrasReachTheMultistepSolvers()
    {
        foreach (var kind in new[] { SamplerKind.DpmSolverPlusPlus, SamplerKind.DpmSolverPlusPlusSde, SamplerKind.UniPC })
        {
            var plain = (VpMultistepScheduler)SchedulerFactory.Create(Linear, new SamplerOptions { Sampler = kind, Steps = 10 });
            Assert.AreEqual(1.0, plain.AlphaBars[^1], kind.ToString());
            Assert.IsTrue(plain.Capabilities.HasFlag(SchedulerCapabilities.ClassifierGuidance));
            var options = new SamplerOptions { Sampler = kind, Steps = 10, FinalSigmasType = FinalSigmasType.SigmaMin, UseKarrasSigmas = true, LowerOrderFinal = false };
            var sch = (VpMultistepScheduler)SchedulerFactory.Create(Linear, options);
            Assert.AreEqual(Linear.AlphaBar(0), sch.AlphaBars[^1], 1e-12, kind.ToString());
            Assert.IsTrue(sch.Settings.UseKarrasSigmas && !sch.Settings.LowerOrderFinal);
            Assert.AreEqual(SchedulerCapabilities.MultistepOptions, sch.Capabilities, "classifier guidance needs the timestep levels");
            CollectionAssert.AreEqual(new[] { 999, 937, 864, 775, 663, 511, 301, 102, 18, 0 }, sch.Timesteps.ToArray());
        }
    }

    [TestMethod]
    [DataRow(SamplerKind.Ddim, "UseKarrasSigmas")]
    [DataRow(SamplerKind.Ddpm, "UseLuLambdas")]
    [DataRow(SamplerKind.EulerKarras, "FinalSigmasType")]
    [DataRow(SamplerKind.HeunKarras, "LowerOrderFinal")]
    public void MultistepOptionsOnOtherSamplers_AreRejectedNamingTheSettingAndTheSolversThatTakeIt(SamplerKind kind, string setting)
    {
        var options = new SamplerOptions { Sampler = kind };
        switch (setting)
        {
            case "UseKarrasSigmas": options.UseKarrasSigmas = true; break;
            case "UseLuLambdas": options.UseLuLambdas = true; break;
            case "FinalSigmasType": options.FinalSigmasType = FinalSigmasType.SigmaMin; break;
            default: options.LowerOrderFinal = false; break;
        }

        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => options.Validate(1000));
        Assert.AreEqual(setting, e.ParamName);
        StringAssert.Contains(e.Message, SamplerRegistry.Get(kind).DisplayName);
        StringAssert.Contains(e.Message, "DPM-Solver++(2M), DPM-Solver++(2M) Karras, DPM-Solver++(2M) SDE, UniPC (bh2)");
    }

    [TestMethod]
    public void BadValues_AreRejectedNamingTheSetting()
    {
        void Expect(string name, Action<SamplerOptions> set)
        {
            var o = new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlus };
            set(o);
            Assert.AreEqual(name, Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => o.Validate(1000)).ParamName);
        }

        Expect("DynamicThresholdingRatio", o => o.DynamicThresholdingRatio = 1.5);
        Expect("DynamicThresholdingRatio", o => o.DynamicThresholdingRatio = double.NaN);
        Expect("SampleMaxValue", o => o.SampleMaxValue = 0);
        Expect("FinalSigmasType", o => o.FinalSigmasType = (FinalSigmasType)9);
        Expect("UseLuLambdas", o => { o.UseKarrasSigmas = true; o.UseLuLambdas = true; });
        Expect("UseLuLambdas", o => { o.Sampler = SamplerKind.DpmSolverPlusPlusKarras; o.UseLuLambdas = true; });
    }

    [TestMethod]
    public void SamplerSettings_RoundTripTheOptions_AndWriteNothingAtTheDefaults()
    {
        var defaults = new DiffusionModelConfig { Network = new UNetConfig(), DefaultSampler = new SamplerOptions().ToSettings() }.ToJson();
        foreach (var key in new[] { "DynamicThresholdingRatio", "SampleMaxValue", "SetAlphaToOne", "UseKarrasSigmas", "UseLuLambdas", "FinalSigmasType", "LowerOrderFinal" })
            Assert.DoesNotContain(key, defaults, "a default is not written, so configs saved before these options read the same");

        var options = new SamplerOptions
        {
            Sampler = SamplerKind.UniPC, DynamicThresholdingRatio = 0.9, SampleMaxValue = 1.5, SetAlphaToOne = false, UseKarrasSigmas = true,
            FinalSigmasType = FinalSigmasType.SigmaMin, LowerOrderFinal = false,
        };
        var json = new DiffusionModelConfig { Network = new UNetConfig(), DefaultSampler = options.ToSettings() }.ToJson();
        var back = DiffusionModelConfig.FromJson(json).DefaultSampler.ToOptions();
        Assert.AreEqual(SamplerKind.UniPC, back.Sampler);
        Assert.AreEqual(0.9, back.DynamicThresholdingRatio);
        Assert.AreEqual(1.5, back.SampleMaxValue);
        Assert.IsFalse(back.SetAlphaToOne);
        Assert.IsTrue(back.UseKarrasSigmas);
        Assert.IsFalse(back.UseLuLambdas);
        Assert.AreEqual(FinalSigmasType.SigmaMin, back.FinalSigmasType);
        Assert.IsFalse(back.LowerOrderFinal);
        Assert.Contains("\"FinalSigmasType\":\"SigmaMin\"", json);

        var old = DiffusionModelConfig.FromJson(defaults).DefaultSampler.ToOptions();
        Assert.AreEqual(0.995, old.DynamicThresholdingRatio);
        Assert.IsTrue(double.IsPositiveInfinity(old.SampleMaxValue) && old.SetAlphaToOne && old.LowerOrderFinal);
    }

    [TestMethod]
    public void SavedSampler_IsCheckedAgainstTheModel_WithTheFieldAndValueNamed()
    {
        var ddpmModel = new DiffusionModelConfig { Network = new UNetConfig(), Timesteps = 1000 };
        new SamplerSettings { Sampler = SamplerKind.DpmSolverPlusPlus, Steps = 20 }.Validate(ddpmModel);   // a valid one passes

        var tooMany = Assert.ThrowsExactly<InvalidDataException>(() => new SamplerSettings { Steps = 1001 }.Validate(ddpmModel));
        StringAssert.Contains(tooMany.Message, "1001");
        StringAssert.Contains(tooMany.Message, "default sampler");
        var flow = Assert.ThrowsExactly<InvalidDataException>(() => new SamplerSettings { Sampler = SamplerKind.FlowMatchEuler }.Validate(ddpmModel));
        StringAssert.Contains(flow.Message, "FlowMatching");
        var flowModel = ddpmModel with { Objective = DiffusionObjective.FlowMatching };
        new SamplerSettings { Sampler = SamplerKind.FlowMatchEuler }.Validate(flowModel);
        Assert.ThrowsExactly<InvalidDataException>(() => new SamplerSettings { Sampler = SamplerKind.Ddim }.Validate(flowModel));
    }
}
