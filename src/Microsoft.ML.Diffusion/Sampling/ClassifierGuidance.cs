using Microsoft.ML.Diffusion.Schedulers;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Sampling;

/// <summary>
/// Classifier guidance (Dhariwal &amp; Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", section 4) applied to one
/// sampler step, with g = grad_x log p_phi(y | x_t, t) from a noisy classifier:
/// <list type="bullet">
/// <item>DDPM (Algorithm 1): x_{t-1} = mu + s Sigma g + sigma z, Sigma being the step's variance (fixed small, fixed large or
/// learned; see <see cref="StepVariance"/>);</item>
/// <item>DDIM and DPM-Solver++ (Algorithm 2, eq. 14): eps_hat = eps - s sqrt(1 - alpha_bar_t) g, converted back to the model's
/// prediction type (x_0 or v) before the scheduler's step.</item>
/// </list>
/// One per sampling batch: it holds the batch's labels through <see cref="Gradient"/>. Knows TorchSharp only.
/// </summary>
internal sealed class ClassifierGuidance
{
    private readonly Func<Tensor, Tensor, Tensor> _gradient;

    /// <summary>Creates the guidance.</summary>
    /// <param name="gradient">(x_t [B, C, S, S], t [B] int64) -> g = grad_x log p(y | x_t, t) for the batch's labels, shaped like x_t.</param>
    /// <param name="scale">The guidance scale s &gt;= 0 (0 leaves every step unchanged).</param>
    /// <param name="prediction">What the diffusion model predicts (epsilon, x_0 or v).</param>
    public ClassifierGuidance(Func<Tensor, Tensor, Tensor> gradient, double scale, PredictionType prediction)
    {
        ArgumentNullException.ThrowIfNull(gradient);
        if (!(scale >= 0) || double.IsInfinity(scale))
            throw new ArgumentOutOfRangeException(nameof(scale), scale, $"The classifier scale is {scale}; expected a finite number >= 0.");
        _gradient = gradient;
        Scale = scale;
        Prediction = SchedulerCore.CheckPrediction(prediction, nameof(prediction));
    }

    /// <summary>The guidance scale s.</summary>
    public double Scale { get; }

    /// <summary>What the diffusion model predicts.</summary>
    public PredictionType Prediction { get; }

    /// <summary>g = grad_x log p(y | x_t, t) for the batch's labels.</summary>
    public Tensor Gradient(Tensor x, Tensor t) => _gradient(x, t);

    /// <summary>
    /// One guided step: the scheduler's <see cref="IDiffusionScheduler.Step"/> with the mean shifted (DDPM) or the noise
    /// prediction shifted (DDIM, DPM-Solver++). With <see cref="Scale"/> 0 it is exactly the scheduler's step.
    /// </summary>
    /// <param name="scheduler">The sampler.</param>
    /// <param name="modelOutput">The network's output at x_t (C or 2C channels).</param>
    /// <param name="timestep">t.</param>
    /// <param name="t">t as a [B] int64 tensor on the network's device (the classifier's time input).</param>
    /// <param name="sample">x_t.</param>
    /// <param name="noise">The step's noise, as for <see cref="IDiffusionScheduler.Step"/>.</param>
    public Tensor Step(IDiffusionScheduler scheduler, Tensor modelOutput, int timestep, Tensor t, Tensor sample, Tensor? noise)
    {
        ArgumentNullException.ThrowIfNull(scheduler);
        if (Scale == 0) return scheduler.Step(modelOutput, timestep, sample, noise);
        CheckSupported(scheduler);
        using var scope = NewDisposeScope();
        var g = Gradient(sample, t);
        if (scheduler.GuidanceVariance(modelOutput, sample, timestep) is { } variance)
        {
            // Algorithm 1: x_{t-1} ~ N(mu + s Sigma grad log p(y | x_t), Sigma): the scheduler's mu + sigma z, plus s Sigma g.
            var next = scheduler.Step(modelOutput, timestep, sample, noise);
            var shift = variance.mul(g).mul_(Scale);
            return next.add_(shift).MoveToOuterDisposeScope();
        }
        var guided = GuideOutput(modelOutput, sample, g, Scale, scheduler.Schedule.AlphaBar(timestep), Prediction);
        return scheduler.Step(guided, timestep, sample, noise).MoveToOuterDisposeScope();
    }

    /// <summary>Throws unless the scheduler's capabilities include classifier guidance; the message names it and the samplers that do.</summary>
    public static void CheckSupported(IDiffusionScheduler scheduler)
    {
        if (!scheduler.Capabilities.HasFlag(SchedulerCapabilities.ClassifierGuidance))
            throw new ArgumentException(
                $"Classifier guidance cannot steer {scheduler.Name} (the noisy classifier needs the VP sample x_t at an integer timestep); " +
                $"supported samplers: {SamplerRegistry.NamesWith(SchedulerCapabilities.ClassifierGuidance)}.", nameof(scheduler));
    }

    /// <summary>
    /// Algorithm 2 / eq. 14 of Dhariwal &amp; Nichol: eps_hat = eps - s sqrt(1 - alpha_bar_t) g, with eps the noise prediction the
    /// model output implies (<see cref="SchedulerCore.ToX0AndEps"/>), returned as the same kind of output: eps_hat for epsilon
    /// prediction; x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat)/sqrt(alpha_bar_t) (DDPM eq. 4 solved for x_0) for x_0
    /// prediction; v_hat = sqrt(alpha_bar_t) eps_hat - sqrt(1 - alpha_bar_t) x0_hat (Salimans &amp; Ho 2022) for v prediction.
    /// A learned-variance output keeps its variance channels. A new tensor in the caller's dispose scope.
    /// </summary>
    public static Tensor GuideOutput(Tensor modelOutput, Tensor sample, Tensor g, double scale, double alphaBar, PredictionType prediction)
    {
        var (output, variance) = SchedulerCore.SplitOutput(modelOutput, sample);
        double alpha = Math.Sqrt(alphaBar), sigma = Math.Sqrt(1.0 - alphaBar);
        var (_, eps) = SchedulerCore.ToX0AndEps(output, sample, alphaBar, prediction);
        var epsHat = SchedulerCore.Combine(1.0, eps, -scale * sigma, g);                   // eq. 14
        Tensor guided = prediction switch
        {
            PredictionType.Epsilon => epsHat,
            PredictionType.Sample => SchedulerCore.Combine(1.0 / alpha, sample, -sigma / alpha, epsHat),
            PredictionType.VPrediction => SchedulerCore.Combine(alpha, epsHat, -sigma,
                SchedulerCore.Combine(1.0 / alpha, sample, -sigma / alpha, epsHat)),
            _ => throw new ArgumentOutOfRangeException(nameof(prediction), prediction, $"Unknown prediction type {prediction}."),
        };
        return variance is null ? guided : cat(new[] { guided, variance }, 1);
    }

    /// <summary>
    /// Sigma, the variance of the DDPM step from <paramref name="timestep"/> that the mean shift s Sigma g uses, as guided-diffusion's
    /// model_variance: fixed small: beta_tilde'_t (DDPM eq. 7 over the visited timesteps); fixed large: beta'_t = 1 - alpha_bar_t /
    /// alpha_bar_prev; learned: exp(log Sigma) of Improved DDPM eq. 15. On the last step (which adds no noise) the clipped value of
    /// <see cref="DdpmScheduler.LogVarianceBounds"/> (the beta_tilde' of the step above) is used for the fixed variances, as
    /// guided-diffusion's posterior_log_variance_clipped does. Returns a tensor broadcastable to the sample.
    /// </summary>
    public static Tensor StepVariance(DdpmScheduler scheduler, Tensor modelOutput, Tensor sample, int timestep)
    {
        ArgumentNullException.ThrowIfNull(scheduler);
        return scheduler.GuidanceVariance(modelOutput, sample, timestep);
    }
}
