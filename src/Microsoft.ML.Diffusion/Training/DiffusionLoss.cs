using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Training;

/// <summary>
/// Training targets and per-timestep loss weights of the denoising objective (knows TorchSharp and the schedule only).
/// With alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t) and x_t = alpha_t x_0 + sigma_t eps (DDPM eq. 4),
/// the network is trained to predict eps (DDPM eq. 14), x_0, or v = alpha_t eps - sigma_t x_0 (Salimans &amp; Ho 2022,
/// section 4), optionally with Min-SNR-gamma weights (Hang et al. 2023).
/// </summary>
internal static class DiffusionLoss
{
    /// <summary>gamma of Min-SNR-gamma weighting; 5 as recommended by Hang et al. 2023.</summary>
    public const double MinSnrGamma = 5.0;

    /// <summary>SNR_t = alpha_bar_t / (1 - alpha_bar_t) (Kingma et al. 2021, "Variational Diffusion Models", eq. 1).</summary>
    /// <param name="alphaBar">alpha_bar_t, in (0, 1).</param>
    public static double Snr(double alphaBar) => alphaBar / (1.0 - alphaBar);

    /// <summary>
    /// The Min-SNR-gamma weight of one timestep for a loss on <paramref name="prediction"/> (Hang et al. 2023, eq. 8 and
    /// section 3.4): min(SNR, gamma) / SNR for epsilon, min(SNR, gamma) for x_0, min(SNR, gamma) / (SNR + 1) for v.
    /// All three equal the x_0-space weight min(SNR, gamma) once the loss is rewritten as a loss on x_0.
    /// </summary>
    /// <param name="alphaBar">alpha_bar_t, in (0, 1).</param>
    /// <param name="prediction">The training target.</param>
    /// <param name="gamma">The clamp gamma (5 by default).</param>
    public static double MinSnrWeight(double alphaBar, PredictionType prediction, double gamma = MinSnrGamma)
    {
        double snr = Snr(alphaBar);
        double clamped = Math.Min(snr, gamma);
        return prediction switch
        {
            PredictionType.Epsilon => clamped / snr,
            PredictionType.Sample => clamped,
            PredictionType.VPrediction => clamped / (snr + 1.0),
            _ => throw new ArgumentOutOfRangeException(nameof(prediction), prediction, $"Unknown prediction type {prediction}."),
        };
    }

    /// <summary>The per-timestep weights of <paramref name="weighting"/> for <paramref name="prediction"/>, in float64 (length T).</summary>
    /// <param name="schedule">The forward-process schedule.</param>
    /// <param name="weighting">The weighting; <see cref="LossWeighting.None"/> gives all ones.</param>
    /// <param name="prediction">The training target.</param>
    public static double[] TimestepWeights(DiffusionSchedule schedule, LossWeighting weighting, PredictionType prediction)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        return weighting switch
        {
            LossWeighting.None => Enumerable.Repeat(1.0, schedule.Timesteps).ToArray(),
            LossWeighting.MinSnr => schedule.AlphaBars.Select(a => MinSnrWeight(a, prediction)).ToArray(),
            _ => throw new ArgumentOutOfRangeException(nameof(weighting), weighting, $"Unknown loss weighting {weighting}."),
        };
    }

    /// <summary>
    /// The regression target for a batch: eps, x_0, or v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans &amp; Ho
    /// 2022, section 4), in x0's dtype and device.
    /// </summary>
    /// <param name="schedule">The forward-process schedule.</param>
    /// <param name="prediction">The training target.</param>
    /// <param name="x0">Clean samples [B, ...].</param>
    /// <param name="eps">The noise that made x_t, shaped like <paramref name="x0"/>.</param>
    /// <param name="timesteps">A [B] int64 tensor of timesteps in [0, T).</param>
    public static Tensor Target(DiffusionSchedule schedule, PredictionType prediction, Tensor x0, Tensor eps, Tensor timesteps)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        ArgumentNullException.ThrowIfNull(x0);
        ArgumentNullException.ThrowIfNull(eps);
        ArgumentNullException.ThrowIfNull(timesteps);
        switch (prediction)
        {
            case PredictionType.Epsilon:
                return eps.alias();
            case PredictionType.Sample:
                return x0.alias();
            case PredictionType.VPrediction:
            {
                using var scope = NewDisposeScope();
                var t = timesteps.to(x0.device);
                int ndim = (int)x0.dim();
                var alpha = DiffusionSchedule.ExtractAs(schedule.AlphaBars.Select(Math.Sqrt).ToArray(), t, ndim, x0.dtype);
                var sigma = DiffusionSchedule.ExtractAs(schedule.AlphaBars.Select(a => Math.Sqrt(1.0 - a)).ToArray(), t, ndim, x0.dtype);
                // v = alpha_t eps - sigma_t x_0 (Progressive Distillation, section 4).
                return (alpha * eps - sigma * x0).MoveToOuterDisposeScope();
            }

            default:
                throw new ArgumentOutOfRangeException(nameof(prediction), prediction, $"Unknown prediction type {prediction}.");
        }
    }

    /// <summary>
    /// The weighted mean squared error: mean over the batch of w_b * mean((predicted_b - target_b)^2). With a null
    /// <paramref name="weights"/> it is the plain MSE (DDPM's L_simple for epsilon).
    /// </summary>
    /// <param name="predicted">The network output [B, ...].</param>
    /// <param name="target">The target, shaped like <paramref name="predicted"/>.</param>
    /// <param name="weights">Per-sample weights [B], or null for none.</param>
    public static Tensor WeightedMse(Tensor predicted, Tensor target, Tensor? weights)
    {
        ArgumentNullException.ThrowIfNull(predicted);
        ArgumentNullException.ThrowIfNull(target);
        if (weights is null)
        {
            return nn.functional.mse_loss(predicted, target);
        }

        using var scope = NewDisposeScope();
        long b = predicted.shape[0];
        var perSample = (predicted - target).square().reshape(b, -1).mean(new long[] { 1 });
        return (perSample * weights.to_type(perSample.dtype)).mean().MoveToOuterDisposeScope();
    }

    /// <summary>lambda of the hybrid objective L_hybrid = L_simple + lambda L_vlb (Improved DDPM eq. 16).</summary>
    public const double HybridLambda = 0.001;

    /// <summary>
    /// Improved DDPM eq. 16: L_hybrid = L_simple + lambda L_vlb with lambda = <see cref="HybridLambda"/>. L_simple is the
    /// (optionally weighted) MSE of the prediction half against <paramref name="target"/> (<see cref="WeightedMse"/>);
    /// L_vlb = T E_t[L_t] is estimated as T times the batch mean of <see cref="VariationalBound.Terms"/> (bits per dimension), as improved-diffusion
    /// does (its "vb * T / 1000").
    /// </summary>
    /// <param name="schedule">The forward-process schedule.</param>
    /// <param name="prediction">What the prediction half is.</param>
    /// <param name="modelOutput">The network output [B, 2C, ...].</param>
    /// <param name="target">The regression target of the prediction half [B, C, ...].</param>
    /// <param name="x0">Clean samples [B, C, ...].</param>
    /// <param name="xt">Noisy samples [B, C, ...].</param>
    /// <param name="t">A [B] int64 tensor of timesteps.</param>
    /// <param name="weights">Per-sample weights of L_simple [B], or null.</param>
    public static Tensor HybridLoss(DiffusionSchedule schedule, PredictionType prediction, Tensor modelOutput, Tensor target,
        Tensor x0, Tensor xt, Tensor t, Tensor? weights = null)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(target);
        using var scope = NewDisposeScope();
        long c = x0.shape[1];
        var simple = WeightedMse(modelOutput.narrow(1, 0, c), target, weights);
        var vlb = VariationalBound.Terms(schedule, prediction, modelOutput, x0, xt, t).mean() * (double)schedule.Timesteps;
        return (simple + vlb * HybridLambda).MoveToOuterDisposeScope();
    }
}
