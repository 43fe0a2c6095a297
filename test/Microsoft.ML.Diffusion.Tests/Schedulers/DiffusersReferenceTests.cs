using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>
/// Configured with diffusers' options (through <see cref="SamplerOptions"/> and the sampler registry), the schedulers give diffusers'
/// numbers on diffusers' scheduler full-loop test: linear betas over T = 1000, 10 steps, the dummy model eps = x t / (t + 1) and the
/// deterministic dummy sample. Reference values: docs/engineering/diffusers-reference/scheduler_full_loops.py, whose output
/// (scheduler_full_loops.out, diffusers 0.40.0 on PyTorch 1.13) they are copied from.
/// </summary>
/// <remarks>Tolerance: diffusers computes alpha_bar (a float32 cumulative product) and the step coefficients in float32, the library
/// in float64; the final sums of |x| differed by 1e-7 to 1.6e-5 relative (largest: SDE with sigma_min). The tests allow 5e-5 relative
/// on the sum and the mean (diffusers' own tests allow 1e-2 absolute on sums of 150-870 and 1e-3 on means, 1e-5 to 5e-3 relative).</remarks>
[TestClass]
public class DiffusersReferenceTests
{
    private const int Steps = 10;
    private const double Tolerance = 5e-5;

    private static readonly int[] Trailing = { 999, 899, 799, 699, 599, 499, 399, 299, 199, 99 };
    private static readonly int[] Karras = { 999, 937, 864, 775, 663, 511, 301, 102, 18, 0 };
    private static readonly int[] Lu = { 999, 886, 757, 603, 410, 202, 73, 22, 5, 0 };
    private static readonly int[] Leading = { 900, 800, 700, 600, 500, 400, 300, 200, 100, 0 };

    /// <summary>diffusers' dummy_sample_deter: arange(768) reshaped to [3, 8, 8, 4], / 768, permuted to [4, 3, 8, 8].</summary>
    private static Tensor DummySample()
    {
        using var a = arange(768, dtype: float32);
        using var r = a.reshape(3, 8, 8, 4);
        using var d = r.div(768f);
        return d.permute(3, 0, 1, 2).contiguous();
    }

    /// <summary>The script's per-step noise: sqrt(2) sin(0.37 k + 1.1 i + 0.5) for flat element k at loop position i.</summary>
    private static Tensor StepNoise(int i)
    {
        var values = Enumerable.Range(0, 768).Select(k => (float)(Math.Sqrt(2.0) * Math.Sin(0.37 * k + 1.1 * i + 0.5))).ToArray();
        return tensor(values, new long[] { 4, 3, 8, 8 });
    }

    private static (SamplerOptions Options, PredictionType Prediction, double BetaStart, int[] Timesteps) Case(string name)
    {
        var ddim = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = Steps, ClipSample = true };
        var dpm = new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlus, Steps = Steps, ClipSample = false, Spacing = TimestepSpacing.Trailing };
        var dpmKarras = new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlusKarras, Steps = Steps, ClipSample = false };
        var sde = new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlusSde, Steps = Steps, ClipSample = false, Spacing = TimestepSpacing.Trailing };
        var unipc = new SamplerOptions { Sampler = SamplerKind.UniPC, Steps = Steps, ClipSample = false, Spacing = TimestepSpacing.Trailing };
        const FinalSigmasType min = FinalSigmasType.SigmaMin;
        const PredictionType eps = PredictionType.Epsilon, v = PredictionType.VPrediction;
        return name switch
        {
            "ddim_set_alpha_to_one_false" => (With(ddim, o => o.SetAlphaToOne = false), eps, 0.01, Leading),
            "ddim_set_alpha_to_one_true" => (ddim, eps, 0.01, Leading),
            "ddim_default_betas_set_alpha_to_one_false" => (With(ddim, o => o.SetAlphaToOne = false), eps, 1e-4, Leading),
            "dpm_zero_lof" => (dpm, eps, 1e-4, Trailing),
            "dpm_sigma_min_lof" => (With(dpm, o => o.FinalSigmasType = min), eps, 1e-4, Trailing),
            "dpm_sigma_min_no_lof" => (With(dpm, o => { o.FinalSigmasType = min; o.LowerOrderFinal = false; }), eps, 1e-4, Trailing),
            "dpm_karras_zero" => (dpmKarras, eps, 1e-4, Karras),
            "dpm_karras_sigma_min_no_lof" => (With(dpmKarras, o => { o.FinalSigmasType = min; o.LowerOrderFinal = false; }), eps, 1e-4, Karras),
            "dpm_lu_zero" => (With(dpm, o => o.UseLuLambdas = true), eps, 1e-4, Lu),
            "dpm_karras_v_prediction" => (dpmKarras, v, 1e-4, Karras),
            "dpm_threshold_087_05" => (With(dpm, o =>
            {
                o.DynamicThresholding = true; o.DynamicThresholdingRatio = 0.87; o.SampleMaxValue = 0.5; o.FinalSigmasType = min; o.LowerOrderFinal = false;
            }), eps, 1e-4, Trailing),
            "sde_zero_lof" => (sde, eps, 1e-4, Trailing),
            "sde_sigma_min_no_lof" => (With(sde, o => { o.FinalSigmasType = min; o.LowerOrderFinal = false; }), eps, 1e-4, Trailing),
            "sde_karras_zero" => (With(sde, o => o.UseKarrasSigmas = true), eps, 1e-4, Karras),
            "unipc_zero_lof" => (unipc, eps, 1e-4, Trailing),
            "unipc_sigma_min_lof" => (With(unipc, o => o.FinalSigmasType = min), eps, 1e-4, Trailing),
            "unipc_sigma_min_no_lof" => (With(unipc, o => { o.FinalSigmasType = min; o.LowerOrderFinal = false; }), eps, 1e-4, Trailing),
            "unipc_karras_zero" => (With(unipc, o => o.UseKarrasSigmas = true), eps, 1e-4, Karras),
            "unipc_karras_v_prediction" => (With(unipc, o => o.UseKarrasSigmas = true), v, 1e-4, Karras),
            _ => throw new ArgumentException(name),
        };
    }

    private static SamplerOptions With(SamplerOptions options, Action<SamplerOptions> change)
    {
        var copy = options.Clone();
        change(copy);
        return copy;
    }

    [TestMethod]
    [DataRow("ddim_set_alpha_to_one_false", 149.07843, 0.19411254)]
    [DataRow("ddim_set_alpha_to_one_true", 149.829468, 0.19509046)]
    [DataRow("ddim_default_betas_set_alpha_to_one_false", 171.998123, 0.22395588)]
    [DataRow("dpm_zero_lof", 185.264862, 0.24123029)]
    [DataRow("dpm_sigma_min_lof", 187.801773, 0.24453355)]
    [DataRow("dpm_sigma_min_no_lof", 253.090897, 0.32954544)]
    [DataRow("dpm_karras_zero", 226.185837, 0.29451281)]
    [DataRow("dpm_karras_sigma_min_no_lof", 226.174561, 0.29449812)]
    [DataRow("dpm_lu_zero", 208.995178, 0.27212915)]
    [DataRow("dpm_karras_v_prediction", 160.656204, 0.20918776)]
    [DataRow("dpm_threshold_087_05", 871.034729, 1.1341598)]
    [DataRow("sde_zero_lof", 246.725433, 0.32125708)]
    [DataRow("sde_sigma_min_no_lof", 601.396851, 0.78306884)]
    [DataRow("sde_karras_zero", 411.34848, 0.53561002)]
    [DataRow("unipc_zero_lof", 187.022964, 0.24351948)]
    [DataRow("unipc_sigma_min_lof", 189.485291, 0.24672563)]
    [DataRow("unipc_sigma_min_no_lof", 255.600845, 0.33281359)]
    [DataRow("unipc_karras_zero", 230.17836, 0.29971141)]
    [DataRow("unipc_karras_v_prediction", 160.84436, 0.20943277)]
    public void FullLoopMatchesDiffusers(string name, double expectedSum, double expectedMean)
    {
        var (options, prediction, betaStart, timesteps) = Case(name);
        var schedule = new DiffusionSchedule(BetaSchedules.Linear(1000, betaStart, 0.02));
        var sch = SchedulerFactory.Create(schedule, options, prediction);
        CollectionAssert.AreEqual(timesteps, sch.Timesteps.ToArray(), "the timesteps diffusers visits");

        var x = DummySample();
        try
        {
            for (int i = 0; i < sch.Timesteps.Count; i++)
            {
                using var scope = NewDisposeScope();
                double t = sch.ModelTimestep(i);
                var residual = x.mul(t).div(t + 1);                                        // diffusers' dummy model
                var noise = sch.NeedsNoise ? StepNoise(i) : null;
                var next = sch.StepAt(i, residual, x, noise).PrevSample.MoveToOuterDisposeScope();
                x.Dispose();
                x = next;
            }

            using var abs = x.abs();
            double sum = abs.sum().to_type(float64).item<double>();
            double mean = abs.mean().to_type(float64).item<double>();
            Assert.AreEqual(expectedSum, sum, Tolerance * expectedSum, $"{name}: sum |x|");
            Assert.AreEqual(expectedMean, mean, Tolerance * expectedMean, $"{name}: mean |x|");
        }
        finally
        {
            x.Dispose();
            (sch as IDisposable)?.Dispose();
        }
    }
}
