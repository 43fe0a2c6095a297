using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedules;

/// <summary>
/// The variational bound terms of a diffusion model with learned variance (Ho et al. 2020, eq. 5; Nichol &amp; Dhariwal
/// 2021, "Improved DDPM", section 3.1 and eq. 15-16), as in openai/improved-diffusion: L_t = KL(q(x_{t-1} | x_t, x_0) ||
/// p_theta(x_{t-1} | x_t)) for t &gt; 0 and L_0 = -log p_theta(x_0 | x_1) with a discretized Gaussian decoder, both in
/// bits per dimension (nats / ln 2, averaged over the dimensions of one sample). Knows TorchSharp and the schedule only.
/// </summary>
internal static class VariationalBound
{
    /// <summary>Half the width of one pixel bin on [-1, 1] with 256 levels: 1/255 (DDPM section 3.3).</summary>
    public const double HalfBinWidth = 1.0 / 255.0;

    /// <summary>
    /// Elementwise KL(N(mean1, exp(logVar1)) || N(mean2, exp(logVar2))) in nats:
    /// 0.5 (-1 + logVar2 - logVar1 + exp(logVar1 - logVar2) + (mean1 - mean2)^2 exp(-logVar2)). Inputs broadcast.
    /// </summary>
    public static Tensor NormalKl(Tensor mean1, Tensor logVar1, Tensor mean2, Tensor logVar2)
    {
        ArgumentNullException.ThrowIfNull(mean1);
        ArgumentNullException.ThrowIfNull(logVar1);
        ArgumentNullException.ThrowIfNull(mean2);
        ArgumentNullException.ThrowIfNull(logVar2);
        using var scope = NewDisposeScope();
        var kl = (logVar2 - logVar1 - 1.0 + (logVar1 - logVar2).exp() + (mean1 - mean2).square() * (-logVar2).exp()) * 0.5;
        return kl.MoveToOuterDisposeScope();
    }

    /// <summary>Phi(x) = 0.5 (1 + erf(x / sqrt 2)), the standard normal CDF (exact; improved-diffusion uses a tanh approximation).</summary>
    public static Tensor StandardNormalCdf(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        using var scope = NewDisposeScope();
        return ((x * (1.0 / Math.Sqrt(2.0))).erf() + 1.0).mul(0.5).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Elementwise log-likelihood, in nats, of pixels <paramref name="x"/> (values in [-1, 1] on the 256 levels) under the
    /// discretized Gaussian decoder of DDPM section 3.3: log of the mass of N(mean, exp(logScale)^2) on [x - 1/255, x + 1/255],
    /// with the bin of -1 extended to -inf and the bin of 1 extended to +inf (probabilities clamped at 1e-12 before the log,
    /// as improved-diffusion does).
    /// </summary>
    /// <param name="x">Data in [-1, 1].</param>
    /// <param name="mean">The decoder mean, broadcastable with <paramref name="x"/>.</param>
    /// <param name="logScale">log of the decoder standard deviation, broadcastable with <paramref name="x"/>.</param>
    public static Tensor DiscretizedGaussianLogLikelihood(Tensor x, Tensor mean, Tensor logScale)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(mean);
        ArgumentNullException.ThrowIfNull(logScale);
        using var scope = NewDisposeScope();
        var centered = x - mean;
        var invStd = (-logScale).exp();
        var cdfPlus = StandardNormalCdf(invStd * (centered + HalfBinWidth));
        var cdfMin = StandardNormalCdf(invStd * (centered - HalfBinWidth));
        var logCdfPlus = cdfPlus.clamp_min(1e-12).log();
        var logOneMinusCdfMin = (1.0 - cdfMin).clamp_min(1e-12).log();
        var logDelta = (cdfPlus - cdfMin).clamp_min(1e-12).log();
        var result = where(x < -0.999, logCdfPlus, where(x > 0.999, logOneMinusCdfMin, logDelta));
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Improved DDPM eq. 15: log Sigma = v log beta + (1 - v) log beta_tilde, with v = (r + 1)/2 for the raw network
    /// output r (so r = -1 gives beta_tilde and r = 1 gives beta). The bounds broadcast against <paramref name="raw"/>.
    /// </summary>
    /// <param name="raw">The variance channels r of the network output (nominally in [-1, 1]).</param>
    /// <param name="logBeta">log beta_t (the upper bound).</param>
    /// <param name="logBetaTilde">log beta_tilde_t, clipped at t = 0 (the lower bound).</param>
    public static Tensor InterpolateLogVariance(Tensor raw, Tensor logBeta, Tensor logBetaTilde)
    {
        ArgumentNullException.ThrowIfNull(raw);
        ArgumentNullException.ThrowIfNull(logBeta);
        ArgumentNullException.ThrowIfNull(logBetaTilde);
        using var scope = NewDisposeScope();
        var v = (raw + 1.0) * 0.5;
        return (v * logBeta + (1.0 - v) * logBetaTilde).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The learned log variance for a [B] batch of timesteps <paramref name="t"/> (eq. 15 with log beta_t and
    /// <see cref="DiffusionSchedule.PosteriorLogVarianceClipped"/>), in <paramref name="raw"/>'s dtype.
    /// </summary>
    public static Tensor LearnedLogVariance(DiffusionSchedule schedule, Tensor raw, Tensor t)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        ArgumentNullException.ThrowIfNull(raw);
        ArgumentNullException.ThrowIfNull(t);
        using var scope = NewDisposeScope();
        int ndim = (int)raw.dim();
        var tt = t.to(raw.device);
        var logBeta = DiffusionSchedule.ExtractAs(schedule.Betas.Select(b => Math.Log(b)).ToArray(), tt, ndim, raw.dtype);
        var logBetaTilde = DiffusionSchedule.ExtractAs(schedule.PosteriorLogVarianceClipped, tt, ndim, raw.dtype);
        return InterpolateLogVariance(raw, logBeta, logBetaTilde).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The per-sample bound term L_t in bits per dimension, [B] (improved-diffusion's _vb_terms_bpd with a frozen mean):
    /// KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) / ln 2 for t &gt; 0 and -log p_theta(x_0 | x_1) / ln 2
    /// (discretized decoder) for t = 0, averaged over the non-batch dimensions. The model mean mu_theta (DDPM eq. 7 with the
    /// predicted x_0, unclipped) is computed from the DETACHED prediction half, so L_t trains only the variance (Improved DDPM
    /// section 3.1, "stop-gradient"). Computed in float64 and returned in <paramref name="x0"/>'s dtype.
    /// </summary>
    /// <param name="schedule">The forward-process schedule.</param>
    /// <param name="prediction">What the prediction half is (epsilon, x_0 or v).</param>
    /// <param name="modelOutput">The network output [B, 2C, ...]: prediction, then raw variance r.</param>
    /// <param name="x0">Clean samples [B, C, ...] in [-1, 1].</param>
    /// <param name="xt">Noisy samples x_t [B, C, ...].</param>
    /// <param name="t">A [B] int64 tensor of timesteps in [0, T).</param>
    public static Tensor Terms(DiffusionSchedule schedule, PredictionType prediction, Tensor modelOutput, Tensor x0, Tensor xt, Tensor t)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(x0);
        ArgumentNullException.ThrowIfNull(xt);
        ArgumentNullException.ThrowIfNull(t);
        long c = x0.shape[1];
        if (modelOutput.dim() != x0.dim() || modelOutput.shape[1] != 2 * c)
            throw new ArgumentException($"modelOutput must have 2 x {c} channels (prediction and variance) for x0 of shape [{string.Join(", ", x0.shape)}]; got [{string.Join(", ", modelOutput.shape)}].", nameof(modelOutput));

        using var scope = NewDisposeScope();
        var dtype = x0.dtype;
        int ndim = (int)x0.dim();
        var tt = t.to(x0.device);
        var pred = modelOutput.narrow(1, 0, c).detach().to_type(float64);     // stop-gradient on the mean (section 3.1)
        var raw = modelOutput.narrow(1, c, c).to_type(float64);
        var x0d = x0.to_type(float64);
        var xtd = xt.to_type(float64);
        Tensor E(double[] values) => DiffusionSchedule.ExtractAs(values, tt, ndim, float64);

        // x0_hat from the prediction (DDPM eq. 4 solved for x_0; v: x_0 = sqrt(abar) x_t - sqrt(1 - abar) v).
        var abar = schedule.AlphaBars;
        var x0Hat = prediction switch
        {
            PredictionType.Epsilon => E(abar.Select(a => 1.0 / Math.Sqrt(a)).ToArray()) * xtd - E(abar.Select(a => Math.Sqrt(1.0 / a - 1.0)).ToArray()) * pred,
            PredictionType.Sample => pred,
            PredictionType.VPrediction => E(abar.Select(Math.Sqrt).ToArray()) * xtd - E(abar.Select(a => Math.Sqrt(1.0 - a)).ToArray()) * pred,
            _ => throw new ArgumentOutOfRangeException(nameof(prediction), prediction, $"Unknown prediction type {prediction}."),
        };

        // DDPM eq. 7: mu_tilde = coef1 x_0 + coef2 x_t, for the true x_0 (q) and the predicted one (p_theta).
        var coef1 = E(schedule.PosteriorMeanCoef1);
        var coef2 = E(schedule.PosteriorMeanCoef2);
        var trueMean = coef1 * x0d + coef2 * xtd;
        var trueLogVar = E(schedule.PosteriorLogVarianceClipped);
        var modelMean = coef1 * x0Hat + coef2 * xtd;
        var modelLogVar = LearnedLogVariance(schedule, raw, tt);              // eq. 15

        var dims = Enumerable.Range(1, ndim - 1).Select(i => (long)i).ToArray();
        var kl = NormalKl(trueMean, trueLogVar, modelMean, modelLogVar).mean(dims) / Math.Log(2.0);
        var nll = -DiscretizedGaussianLogLikelihood(x0d, modelMean, modelLogVar * 0.5).mean(dims) / Math.Log(2.0);
        return where(tt.eq(0L).reshape(-1), nll, kl).to_type(dtype).MoveToOuterDisposeScope();
    }
}
