using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Guidance;

/// <summary>
/// Classifier guidance (Dhariwal &amp; Nichol 2021) on one step, against values computed independently: a stand-in classifier with
/// linear logits W x + b has the analytic gradient grad_x log softmax(Wx + b)[y] = W_y - sum_k p_k W_k.
/// </summary>
[TestClass]
public class ClassifierGuidanceTests
{
    private const int T = 50, K = 3;
    private static readonly long[] Shape = { 2, 1, 4, 4 };

    private static Tensor Randn(long[] shape, ulong seed)
    {
        using var g = new Generator(seed);
        return randn(shape, dtype: float64, generator: g).to_type(float32);
    }

    /// <summary>Logits W x_flat + b of the stand-in classifier (W: [K, 16], b: [K]); t is ignored.</summary>
    private static (Tensor W, Tensor B) Linear()
    {
        var w = Randn(new long[] { K, 16 }, 7) * 0.5f;
        var b = Randn(new long[] { K }, 8);
        return (w, b);
    }

    /// <summary>The analytic gradient, computed in float64 without autograd.</summary>
    private static Tensor AnalyticGradient(Tensor x, Tensor w, Tensor b, long[] labels)
    {
        using var scope = NewDisposeScope();
        var xf = x.reshape(x.shape[0], -1).to_type(float64);
        var w64 = w.to_type(float64);
        var p = nn.functional.softmax(xf.matmul(w64.t()) + b.to_type(float64), 1);   // [B, K]
        var wy = w64.index_select(0, tensor(labels));                                // [B, 16]
        var g = wy - p.matmul(w64);                                                 // W_y - sum_k p_k W_k
        return g.reshape(x.shape).to_type(float32).MoveToOuterDisposeScope();
    }

    private static NoisyClassifierModel StandIn(Tensor w, Tensor b)
    {
        var config = new NoisyClassifierModelConfig
        {
            Network = new NoisyClassifierConfig
            {
                ImageSize = 4, InChannels = 1, BaseChannels = 8, ChannelMultipliers = new[] { 1 }, AttentionResolutions = Array.Empty<int>(),
                GroupNormGroups = 4, NumClasses = K,
            },
            Timesteps = T,
        };
        var model = new NoisyClassifierModel(new MLContext(), config, new NoisyClassifierNetwork(config.Network), CPU);
        model.LogitsForward = (x, t) => x.reshape(x.shape[0], -1).matmul(w.t()) + b;
        return model;
    }

    [TestMethod]
    public void TheGradientOfLogPEqualsTheAnalyticGradientAlsoInsideNoGrad()
    {
        var (w, b) = Linear();
        using var model = StandIn(w, b);
        using var x = Randn(Shape, 1);
        var labels = new long[] { 2, 0 };
        using var y = tensor(labels);
        using var t = tensor(new long[] { 10, 10 });
        using var expected = AnalyticGradient(x, w, b, labels);
        using var noGrad = no_grad();
        using var g = model.LogProbabilityGradient(x, t, y);
        Assert.IsFalse(g.requires_grad, "the gradient carries no graph");
        Assert.IsTrue(g.allclose(expected, rtol: 1e-4, atol: 1e-5), "grad log softmax(Wx + b)[y] = W_y - sum_k p_k W_k");
        Assert.IsFalse(x.requires_grad, "the caller's x_t is not modified");
    }

    private static ClassifierGuidance Guidance(Tensor g, double s, PredictionType prediction = PredictionType.Epsilon) =>
        new((x, t) => g.clone(), s, prediction);

    [TestMethod]
    public void DdpmShiftsTheMeanByScaleTimesTheStepVarianceTimesTheGradient()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, T);
        using var x = Randn(Shape, 2);
        using var eps = Randn(Shape, 3);
        using var z = Randn(Shape, 4);
        using var g = Randn(Shape, 5);
        using var tt = tensor(new long[] { 30, 30 });
        const double s = 2.5;
        foreach (var variance in new[] { VarianceType.FixedSmall, VarianceType.FixedLarge })
        {
            var ddpm = new DdpmScheduler(schedule, variance, clipSample: false);
            ddpm.SetTimesteps(5);                         // leading: 40, 30, 20, 10, 0
            int t = 30, prev = 20;
            double abarT = schedule.AlphaBar(t), abarPrev = schedule.AlphaBar(prev);
            double betaPrime = 1 - abarT / abarPrev;
            // DDPM eq. 7 over the visited timesteps (fixed small) or beta' (fixed large), computed here from alpha_bar.
            double sigma2 = variance == VarianceType.FixedSmall ? (1 - abarPrev) / (1 - abarT) * betaPrime : betaPrime;
            using var plain = ddpm.Step(eps, t, x, z);
            using var guided = Guidance(g, s).Step(ddpm, eps, t, tt, x, z);
            using var shift = guided - plain;
            using var expected = g * (float)(s * sigma2);
            Assert.IsTrue(shift.allclose(expected, rtol: 1e-4, atol: 1e-6), $"{variance}: x_(t-1) = mu + s Sigma g + sigma z (Algorithm 1)");
        }
    }

    [TestMethod]
    public void DdpmWithLearnedVarianceUsesExpOfTheLearnedLogVariance()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, T);
        var ddpm = new DdpmScheduler(schedule, VarianceType.Learned, clipSample: false);
        ddpm.SetTimesteps(5);
        using var x = Randn(Shape, 2);
        using var output = cat(new[] { Randn(Shape, 3), Randn(Shape, 6).tanh() }, 1);   // eps, then r in [-1, 1]
        using var z = Randn(Shape, 4);
        using var g = Randn(Shape, 5);
        using var tt = tensor(new long[] { 30, 30 });
        using var plain = ddpm.Step(output, 30, x, z);
        using var guided = Guidance(g, 1.5).Step(ddpm, output, 30, tt, x, z);
        // Improved DDPM eq. 15: log Sigma = v log beta' + (1 - v) log beta_tilde', v = (r + 1)/2.
        double abarT = schedule.AlphaBar(30), abarPrev = schedule.AlphaBar(20);
        double beta = 1 - abarT / abarPrev, betaTilde = (1 - abarPrev) / (1 - abarT) * beta;
        using var v = (output.narrow(1, 1, 1).to_type(float64) + 1) / 2;
        using var sigma2 = (v * Math.Log(beta) + (1 - v) * Math.Log(betaTilde)).exp();
        using var expected = (g.to_type(float64) * sigma2 * 1.5).to_type(float32);
        Assert.IsTrue((guided - plain).allclose(expected, rtol: 1e-4, atol: 1e-6));
    }

    [TestMethod]
    public void DdimUsesEpsMinusScaleTimesSqrtOneMinusAlphaBarTimesTheGradient()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Cosine, T);
        using var x = Randn(Shape, 2);
        using var eps = Randn(Shape, 3);
        using var g = Randn(Shape, 5);
        using var tt = tensor(new long[] { 30, 30 });
        const double s = 3;
        var ddim = new DdimScheduler(schedule, eta: 0, clipSample: false);
        ddim.SetTimesteps(5);
        // Algorithm 2 / eq. 14: eps_hat = eps - s sqrt(1 - alpha_bar_t) g.
        using var epsHat = eps - g * (float)(s * Math.Sqrt(1 - schedule.AlphaBar(30)));
        using var expected = ddim.Step(epsHat, 30, x);
        using var guided = Guidance(g, s).Step(ddim, eps, 30, tt, x, null);
        Assert.IsTrue(guided.allclose(expected, rtol: 1e-5, atol: 1e-6));

        // A v-prediction model: its output is converted to eps, shifted, and converted back, so the step equals the
        // epsilon-prediction step with eps_hat. v = sqrt(abar) eps - sqrt(1 - abar) x0, x0 = (x - sqrt(1 - abar) eps)/sqrt(abar).
        double abar = schedule.AlphaBar(30), a = Math.Sqrt(abar), sg = Math.Sqrt(1 - abar);
        using var x0 = (x - eps * (float)sg) / (float)a;
        using var vOut = eps * (float)a - x0 * (float)sg;
        var ddimV = new DdimScheduler(schedule, eta: 0, clipSample: false, prediction: PredictionType.VPrediction);
        ddimV.SetTimesteps(5);
        using var guidedV = Guidance(g, s, PredictionType.VPrediction).Step(ddimV, vOut, 30, tt, x, null);
        Assert.IsTrue(guidedV.allclose(expected, rtol: 1e-4, atol: 1e-5), "v prediction: the same eps shift");

        // An x0-prediction model likewise.
        var ddimX0 = new DdimScheduler(schedule, eta: 0, clipSample: false, prediction: PredictionType.Sample);
        ddimX0.SetTimesteps(5);
        using var guidedX0 = Guidance(g, s, PredictionType.Sample).Step(ddimX0, x0, 30, tt, x, null);
        Assert.IsTrue(guidedX0.allclose(expected, rtol: 1e-4, atol: 1e-5), "x0 prediction: the same eps shift");
    }

    [TestMethod]
    public void ScaleZeroIsExactlyTheSchedulersStepAndBadScalesFail()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, T);
        var dpm = new DpmSolverMultistepScheduler(schedule);
        dpm.SetTimesteps(5);
        using var x = Randn(Shape, 2);
        using var eps = Randn(Shape, 3);
        using var tt = tensor(new long[] { 49, 49 });
        bool called = false;
        var guidance = new ClassifierGuidance((a, b) => { called = true; return zeros_like(a); }, 0, PredictionType.Epsilon);
        int t = dpm.Timesteps[0];
        using var plain = dpm.Step(eps, t, x);
        dpm.SetTimesteps(5);
        using var guided = guidance.Step(dpm, eps, t, tt, x, null);
        Assert.IsTrue(plain.allclose(guided, 0, 0));
        Assert.IsFalse(called, "s = 0 computes no gradient");
        foreach (var bad in new[] { -1.0, double.NaN, double.PositiveInfinity })
        {
            var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new ClassifierGuidance((a, b) => a, bad, PredictionType.Epsilon));
            StringAssert.Contains(e.Message, "expected a finite number >= 0");
        }
    }
}
