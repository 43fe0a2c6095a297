using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Schedules;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Training;

/// <summary>
/// One AdamW step of the noisy classifier p_phi(y | x_t, t) of classifier guidance (Dhariwal &amp; Nichol 2021, section 4.1)
/// on a batch of clean images and labels: t ~ U{0..T-1}, eps ~ N(0, I), x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
/// (DDPM eq. 4, with the diffusion model's schedule), loss = cross-entropy(f(x_t, t), y). The timesteps and noise come from the
/// loop's seeded CPU generator, so runs are reproducible and resumable; the retry of non-finite steps and the checkpoint state
/// are <see cref="TrainingLoop"/>'s. Knows TorchSharp only.
/// </summary>
internal sealed class NoisyClassifierTrainingLoop : TrainingLoop
{
    private readonly DiffusionSchedule _schedule;

    /// <summary>Creates the loop; <paramref name="model"/> must already be on <paramref name="device"/>.</summary>
    /// <param name="model">The classifier.</param>
    /// <param name="schedule">The diffusion model's noise schedule (its T and alpha_bar).</param>
    /// <param name="learningRate">AdamW learning rate.</param>
    /// <param name="weightDecay">AdamW decoupled weight decay.</param>
    /// <param name="seed">Seed of the timesteps and noise.</param>
    /// <param name="device">Where the model is.</param>
    public NoisyClassifierTrainingLoop(NoisyClassifierNetwork model, DiffusionSchedule schedule, double learningRate, double weightDecay,
        long seed, Device device)
        : this(model, schedule, new LearningRatePlan(learningRate), weightDecay, seed, device)
    {
    }

    /// <summary>Creates the loop with a learning-rate curve; <paramref name="model"/> must already be on <paramref name="device"/>.</summary>
    public NoisyClassifierTrainingLoop(NoisyClassifierNetwork model, DiffusionSchedule schedule, LearningRatePlan learningRate, double weightDecay,
        long seed, Device device)
        : base(model ?? throw new ArgumentNullException(nameof(model)), seed, device,
               parameters => ScalarSafeOptimizers.AdamW(parameters, learningRate.Peak, weightDecay), learningRate)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        Model = model;
        _schedule = schedule;
    }

    /// <summary>The network being trained.</summary>
    public NoisyClassifierNetwork Model { get; }

    /// <summary>The fraction of the last batch the classifier got right (on the noisy images it was trained with).</summary>
    public float LastAccuracy { get; private set; } = float.NaN;

    /// <summary>One step on <paramref name="x0"/> [B, C, S, S] in [-1, 1] with class indices <paramref name="labels"/> [B] int64;
    /// returns the mean cross-entropy.</summary>
    public float TrainStep(Tensor x0, Tensor labels)
    {
        ArgumentNullException.ThrowIfNull(x0);
        ArgumentNullException.ThrowIfNull(labels);
        Model.train();
        using var scope = NewDisposeScope();
        var input = x0.to(Device);
        var y = labels.to(Device);
        long b = input.shape[0];
        // t ~ U{0, ..., T-1} and eps ~ N(0, I), drawn on the CPU from the seeded generator.
        var t = randint(0, _schedule.Timesteps, new long[] { b }, dtype: int64, device: CPU, generator: Generator).to(Device);
        var eps = randn(input.shape, dtype: float32, device: CPU, generator: Generator).to(Device);
        var xt = _schedule.AddNoise(input, eps, t);                  // DDPM eq. 4
        Tensor logits = null!;
        return OptimizerStep(() =>
            {
                logits = Model.forward(xt, t);
                return nn.functional.cross_entropy(logits, y);
            },
            succeeded: () => LastAccuracy = logits.argmax(1).eq(y).to_type(float32).mean().item<float>(),
            network: "classifier", lossName: "cross-entropy");
    }
}
