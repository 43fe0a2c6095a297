using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Schedules;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Training;

/// <summary>
/// One AdamW step of the noisy classifier p_phi(y | x_t, t) of classifier guidance (Dhariwal &amp; Nichol 2021, section 4.1)
/// on a batch of clean images and labels: t ~ U{0..T-1}, eps ~ N(0, I), x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
/// (DDPM eq. 4, with the diffusion model's schedule), loss = cross-entropy(f(x_t, t), y). The timesteps and noise come from a
/// CPU generator seeded with the given seed, so runs are reproducible. A step whose loss or gradients are not finite is
/// recomputed (some CPUs' kernels return NaN at random, see TorchRuntime); a failure that persists throws
/// <see cref="NonFiniteLossException"/> and leaves the weights untouched. Knows TorchSharp only.
/// </summary>
internal sealed class NoisyClassifierTrainingLoop : IDisposable
{
    private const int MaxAttempts = 3;
    private readonly DiffusionSchedule _schedule;
    private readonly Device _device;
    private readonly Generator _generator;
    private readonly OptimizerHelper _optimizer;
    private readonly Parameter[] _parameters;

    /// <summary>Creates the loop; <paramref name="model"/> must already be on <paramref name="device"/>.</summary>
    /// <param name="model">The classifier.</param>
    /// <param name="schedule">The diffusion model's noise schedule (its T and alpha_bar).</param>
    /// <param name="learningRate">AdamW learning rate.</param>
    /// <param name="weightDecay">AdamW decoupled weight decay.</param>
    /// <param name="seed">Seed of the timesteps and noise.</param>
    /// <param name="device">Where the model is.</param>
    public NoisyClassifierTrainingLoop(NoisyClassifierNetwork model, DiffusionSchedule schedule, double learningRate, double weightDecay,
        long seed, Device device)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(schedule);
        Model = model;
        _schedule = schedule;
        _device = device;
        _generator = new Generator((ulong)seed, CPU);
        _parameters = model.parameters().ToArray();
        _optimizer = ScalarSafeOptimizers.AdamW(_parameters, learningRate, weightDecay);
    }

    /// <summary>The network being trained.</summary>
    public NoisyClassifierNetwork Model { get; }

    /// <summary>Optimizer steps taken.</summary>
    public long Step { get; private set; }

    /// <summary>The fraction of the last batch the classifier got right (on the noisy images it was trained with).</summary>
    public float LastAccuracy { get; private set; } = float.NaN;

    /// <summary>The loss of the last successful step (NaN before the first).</summary>
    public float LastFiniteLoss { get; private set; } = float.NaN;

    /// <summary>One step on <paramref name="x0"/> [B, C, S, S] in [-1, 1] with class indices <paramref name="labels"/> [B] int64;
    /// returns the mean cross-entropy.</summary>
    public float TrainStep(Tensor x0, Tensor labels)
    {
        ArgumentNullException.ThrowIfNull(x0);
        ArgumentNullException.ThrowIfNull(labels);
        Model.train();
        float lossValue = float.NaN;
        using (var scope = NewDisposeScope())
        {
            var input = x0.to(_device);
            var y = labels.to(_device);
            long b = input.shape[0];
            // t ~ U{0, ..., T-1} and eps ~ N(0, I), drawn on the CPU from the seeded generator.
            var t = randint(0, _schedule.Timesteps, new long[] { b }, dtype: int64, device: CPU, generator: _generator).to(_device);
            var eps = randn(input.shape, dtype: float32, device: CPU, generator: _generator).to(_device);
            var xt = _schedule.AddNoise(input, eps, t);                  // DDPM eq. 4
            for (int attempt = 1; ; attempt++)
            {
                using var attemptScope = NewDisposeScope();
                var logits = Model.forward(xt, t);
                var loss = nn.functional.cross_entropy(logits, y);
                lossValue = loss.item<float>();
                _optimizer.zero_grad();
                if (float.IsFinite(lossValue))
                {
                    loss.backward();
                    double norm = nn.utils.clip_grad_norm_(_parameters, double.PositiveInfinity);
                    if (double.IsFinite(norm))
                    {
                        LastAccuracy = logits.argmax(1).eq(y).to_type(float32).mean().item<float>();
                        break;
                    }
                }
                if (attempt == MaxAttempts)
                {
                    _optimizer.zero_grad();
                    throw NonFiniteLossException.AfterRetries(Step + 1, lossValue, LastFiniteLoss, MaxAttempts, "classifier", "cross-entropy");
                }
            }
            _optimizer.step();
        }
        Step++;
        LastFiniteLoss = lossValue;
        return lossValue;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _generator.Dispose();
        (_optimizer as IDisposable)?.Dispose();
    }
}
