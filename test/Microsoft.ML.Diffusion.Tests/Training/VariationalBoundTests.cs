using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Training;

/// <summary>Gaussian KL, the discretized Gaussian decoder and the hybrid loss of Improved DDPM, against float64 closed forms written here.</summary>
[TestClass]
public class VariationalBoundTests
{
    /// <summary>erf by its Taylor series (accurate to ~1e-12 for |x| &lt;= 4).</summary>
    private static double Erf(double x)
    {
        double sum = 0, term = x;                       // term_n = (-1)^n x^(2n+1) / n!
        for (int n = 0; n < 200; n++)
        {
            sum += term / (2 * n + 1);
            term *= -x * x / (n + 1);
            if (Math.Abs(term) < 1e-18) break;
        }

        return 2.0 / Math.Sqrt(Math.PI) * sum;
    }

    private static double Phi(double x) => 0.5 * (1.0 + Erf(x / Math.Sqrt(2.0)));

    private static Tensor D(double v) => tensor(new[] { v }, dtype: float64);

    [TestMethod]
    [DataRow(0.0, 0.0, 0.0, 0.0)]
    [DataRow(0.3, -1.0, -0.2, 0.5)]
    [DataRow(-1.5, -4.0, 0.7, -3.0)]
    [DataRow(2.0, 1.0, 2.0, -2.0)]
    public void NormalKlMatchesClosedForm(double m1, double lv1, double m2, double lv2)
    {
        // KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2.
        double s1 = Math.Exp(0.5 * lv1), s2 = Math.Exp(0.5 * lv2);
        double expected = Math.Log(s2 / s1) + (s1 * s1 + (m1 - m2) * (m1 - m2)) / (2 * s2 * s2) - 0.5;
        using var kl = VariationalBound.NormalKl(D(m1), D(lv1), D(m2), D(lv2));
        Assert.AreEqual(expected, kl.item<double>(), 1e-12 * Math.Max(1, Math.Abs(expected)));
    }

    [TestMethod]
    [DataRow(0, -0.98, -1.0)]      // x = -1: the bin extends to -inf
    [DataRow(255, 0.9, -2.0)]      // x = 1: the bin extends to +inf
    [DataRow(128, 0.05, -2.5)]     // interior bins
    [DataRow(60, -0.5, -3.0)]
    [DataRow(200, 0.6, -1.2)]
    public void DiscretizedGaussianLogLikelihoodMatchesClosedForm(int level, double mean, double logScale)
    {
        double x = 2.0 * level / 255.0 - 1.0;
        double s = Math.Exp(logScale);
        double upper = level == 255 ? 1.0 : Phi((x + 1.0 / 255.0 - mean) / s);
        double lower = level == 0 ? 0.0 : Phi((x - 1.0 / 255.0 - mean) / s);
        double expected = Math.Log(upper - lower);
        using var ll = VariationalBound.DiscretizedGaussianLogLikelihood(D(x), D(mean), D(logScale));
        Assert.AreEqual(expected, ll.item<double>(), 1e-8 * Math.Max(1, Math.Abs(expected)), $"level {level}");

        // float32 input agrees to float32 precision.
        using var ll32 = VariationalBound.DiscretizedGaussianLogLikelihood(tensor(new[] { (float)x }), tensor(new[] { (float)mean }), tensor(new[] { (float)logScale }));
        Assert.AreEqual(expected, ll32.item<float>(), 2e-3 * Math.Max(1, Math.Abs(expected)));
    }

    [TestMethod]
    public void InterpolateLogVarianceFollowsEq15()
    {
        using var raw = tensor(new[] { -1.0, 1.0, 0.0, 0.5 }, dtype: float64);
        using var r = VariationalBound.InterpolateLogVariance(raw, D(-2.0), D(-6.0));
        var values = r.data<double>().ToArray();
        double[] v = { 0.0, 1.0, 0.5, 0.75 };
        for (int i = 0; i < 4; i++) Assert.AreEqual(v[i] * -2.0 + (1 - v[i]) * -6.0, values[i], 1e-12);
    }

    [TestMethod]
    public void TermsMatchFloat64Recomputation()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 50);
        var betas = Schedules.ReferenceSchedules.LinearBetas(50);
        var abar = Schedules.ReferenceSchedules.AlphaBars(betas);
        using var gen = new Generator(5, CPU);
        using var x0 = (randint(0, 256, new long[] { 2, 1, 2, 2 }, dtype: float64, generator: gen) * (2.0 / 255) - 1);
        using var eps = randn(new long[] { 2, 1, 2, 2 }, dtype: float64, generator: gen);
        using var output = randn(new long[] { 2, 2, 2, 2 }, dtype: float64, generator: gen) * 0.5;
        int[] ts = { 17, 0 };
        using var t = tensor(ts.Select(i => (long)i).ToArray());
        using var xt = schedule.AddNoise(x0, eps, t);
        using var terms = VariationalBound.Terms(schedule, PredictionType.Epsilon, output, x0, xt, t);
        var x0a = x0.data<double>().ToArray(); var xta = xt.data<double>().ToArray(); var outa = output.data<double>().ToArray();
        for (int b = 0; b < 2; b++)
        {
            int tt = ts[b];
            double ap = tt == 0 ? 1 : abar[tt - 1];
            double bTilde(int k) => (1 - (k == 0 ? 1 : abar[k - 1])) / (1 - abar[k]) * betas[k];
            double logTilde = Math.Log(tt == 0 ? bTilde(1) : bTilde(tt));
            double c1 = Math.Sqrt(ap) * betas[tt] / (1 - abar[tt]), c2 = Math.Sqrt(1 - betas[tt]) * (1 - ap) / (1 - abar[tt]);
            double sum = 0;
            for (int i = 0; i < 4; i++)
            {
                double xtv = xta[b * 4 + i], x0v = x0a[b * 4 + i];
                double epsHat = outa[b * 8 + i], r = outa[b * 8 + 4 + i];
                double x0Hat = (xtv - Math.Sqrt(1 - abar[tt]) * epsHat) / Math.Sqrt(abar[tt]);
                double mu = c1 * x0Hat + c2 * xtv, muTrue = c1 * x0v + c2 * xtv;
                double v = (r + 1) / 2, logVar = v * Math.Log(betas[tt]) + (1 - v) * logTilde;
                if (tt > 0)
                {
                    sum += 0.5 * (-1 + logVar - logTilde + Math.Exp(logTilde - logVar) + (muTrue - mu) * (muTrue - mu) * Math.Exp(-logVar));
                }
                else
                {
                    double s = Math.Exp(0.5 * logVar);
                    int level = (int)Math.Round((x0v + 1) * 127.5);
                    double up = level == 255 ? 1 : Phi((x0v + 1 / 255.0 - mu) / s), lo = level == 0 ? 0 : Phi((x0v - 1 / 255.0 - mu) / s);
                    sum += -Math.Log(Math.Max(up - lo, 1e-12));
                }
            }

            double expected = sum / 4 / Math.Log(2);
            Assert.AreEqual(expected, terms[b].item<double>(), 1e-7 * Math.Max(1, Math.Abs(expected)), $"t = {tt}");
        }
    }

    [TestMethod]
    public void VlbHasNoGradientThroughTheMean()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Cosine, 50);
        foreach (var prediction in new[] { PredictionType.Epsilon, PredictionType.Sample, PredictionType.VPrediction })
        {
            using var scope = NewDisposeScope();
            var x0 = rand(4, 1, 4, 4) * 2 - 1;
            var eps = randn(4, 1, 4, 4);
            var t = tensor(new long[] { 0, 5, 30, 49 });
            var xt = schedule.AddNoise(x0, eps, t);
            var output = (randn(4, 2, 4, 4) * 0.5).requires_grad_();
            VariationalBound.Terms(schedule, prediction, output, x0, xt, t).sum().backward();
            var grad = output.grad!;
            Assert.AreEqual(0.0, grad.narrow(1, 0, 1).abs().max().item<float>(), $"{prediction}: no gradient reaches the prediction half");
            Assert.IsGreaterThan(0f, grad.narrow(1, 1, 1).abs().max().item<float>(), $"{prediction}: the variance half is trained");
        }
    }

    [TestMethod]
    public void HybridLossLowersOnAFixedBatch()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 50);
        var config = new UNetConfig
        {
            ImageSize = 8, InChannels = 1, OutChannels = 2, BaseChannels = 8, ChannelMultipliers = new[] { 1, 2 },
            AttentionResolutions = Array.Empty<int>(), NumResBlocks = 1, GroupNormGroups = 4,
        };
        manual_seed(11);
        using var model = new UNet(config);
        using var gen = new Generator(7, CPU);
        using var x0 = rand(new long[] { 8, 1, 8, 8 }, generator: gen) * 2 - 1;
        using var eps = randn(new long[] { 8, 1, 8, 8 }, generator: gen);
        using var t = tensor(new long[] { 0, 3, 8, 15, 22, 30, 41, 49 });
        using var xt = schedule.AddNoise(x0, eps, t);
        var optimizer = optim.Adam(model.parameters(), lr: 2e-3);
        float first = 0, last = 0;
        for (int step = 0; step < 20; step++)
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            var output = model.forward(xt, t);
            var loss = DiffusionLoss.HybridLoss(schedule, PredictionType.Epsilon, output, eps, x0, xt, t);
            last = loss.item<float>();
            if (step == 0) first = last;
            Assert.IsTrue(float.IsFinite(last), $"step {step}");
            loss.backward();
            optimizer.step();
        }

        Assert.IsLessThan(first * 0.9f, last, $"the hybrid loss went from {first} to {last}");
    }

    [TestMethod]
    public void TrainingLoopWithLearnedVarianceTakesFiniteSteps()
    {
        var config = new UNetConfig
        {
            ImageSize = 8, OutChannels = 2, BaseChannels = 8, ChannelMultipliers = new[] { 1 }, AttentionResolutions = Array.Empty<int>(),
            NumResBlocks = 1, GroupNormGroups = 4,
        };
        using var model = new UNet(config);
        using var ema = new UNet(config);
        using var loop = new DiffusionTrainingLoop(model, ema, new DiffusionSchedule(NoiseSchedule.Linear, 50),
            new TrainingSettings { Seed = 1, LearnedVariance = true }, CPU);
        using var x = rand(4, 1, 8, 8) * 2 - 1;
        for (int i = 0; i < 3; i++) Assert.IsTrue(float.IsFinite(loop.TrainStep(x)));
    }
}
