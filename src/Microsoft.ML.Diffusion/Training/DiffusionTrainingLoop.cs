using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Schedules;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Training;

/// <summary>Optimisation settings of <see cref="DiffusionTrainingLoop"/>.</summary>
public sealed record TrainingSettings
{
    /// <summary>AdamW learning rate.</summary>
    public double LearningRate { get; init; } = 2e-4;
    /// <summary>AdamW decoupled weight decay.</summary>
    public double WeightDecay { get; init; } = 1e-6;
    /// <summary>Gradients are rescaled so that their global L2 norm is at most this (0 disables).</summary>
    public double GradientClipNorm { get; init; } = 1.0;
    /// <summary>EMA decay of the weights used for sampling.</summary>
    public double EmaDecay { get; init; } = 0.995;
    /// <summary>Seed of the generator that draws timesteps and noise.</summary>
    public long Seed { get; init; }
    /// <summary>The regression target: eps (default), x_0 or v (see <see cref="DiffusionLoss.Target"/>).</summary>
    public PredictionType Prediction { get; init; } = PredictionType.Epsilon;
    /// <summary>Per-timestep loss weights (see <see cref="DiffusionLoss.TimestepWeights"/>).</summary>
    public LossWeighting LossWeighting { get; init; } = LossWeighting.None;
    /// <summary>The network outputs 2C channels (prediction, then the raw variance of Improved DDPM eq. 15) and is trained
    /// with the hybrid loss L_simple + 0.001 L_vlb (eq. 16; <see cref="VariationalBound.HybridLoss"/>).</summary>
    public bool LearnedVariance { get; init; }
    /// <summary>Self-conditioning (Chen, Zhang &amp; Hinton 2022, "Analog Bits", section 3, algorithm 1): the network takes
    /// 2C input channels, concat(x_t, x0_hat). With probability 0.5 per batch x0_hat is the network's own x_0 estimate from a
    /// first forward pass with a zero self-condition under stop-gradient (clamped to [-1, 1]); otherwise it is zeros.
    /// See <see cref="Microsoft.ML.Diffusion.Training.SelfConditioning"/>.</summary>
    public bool SelfConditioning { get; init; }
    /// <summary>The number format of the forward and backward passes: float32 (default) or bfloat16 mixed precision
    /// (<see cref="Precision.Bf16Mixed"/>: a bfloat16 working copy of the network computes, the float32 weights, AdamW moments,
    /// gradient clipping, EMA and loss stay float32).</summary>
    public Precision Precision { get; init; } = Precision.Fp32;
}

/// <summary>
/// The DDPM training step (Ho et al. 2020, algorithm 1): t ~ Uniform{0..T-1}, eps ~ N(0, I),
/// x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (eq. 4), minimise || eps - eps_theta(x_t, t) ||^2 (eq. 14),
/// with AdamW, gradient clipping and an EMA of the weights. The target may instead be x_0 or v and the per-sample
/// loss may carry Min-SNR weights (<see cref="DiffusionLoss"/>). Knows TorchSharp only.
/// </summary>
public sealed class DiffusionTrainingLoop : IDisposable
{
    private readonly DiffusionSchedule _schedule;
    private readonly Device _device;
    private readonly Generator _generator;
    private readonly OptimizerHelper _optimizer;
    private readonly Parameter[] _parameters;
    private readonly double[]? _timestepWeights;                    // null: unweighted MSE
    private readonly LowPrecisionCopy? _lowPrecision;               // the bfloat16 working copy (Precision.Bf16Mixed)

    /// <summary>Creates the loop. The network and its EMA copy must already be on <paramref name="device"/>.</summary>
    public DiffusionTrainingLoop(UNet model, UNet emaModel, DiffusionSchedule schedule, TrainingSettings settings, Device device)
    {
        if (!Enum.IsDefined(settings.Prediction))
            throw new ArgumentOutOfRangeException(nameof(settings), settings.Prediction, $"Unknown prediction type {settings.Prediction}.");
        if (!Enum.IsDefined(settings.LossWeighting))
            throw new ArgumentOutOfRangeException(nameof(settings), settings.LossWeighting, $"Unknown loss weighting {settings.LossWeighting}.");
        if (!Enum.IsDefined(settings.Precision))
            throw new ArgumentOutOfRangeException(nameof(settings), settings.Precision, $"Unknown precision {settings.Precision}.");
        Model = model;
        _schedule = schedule;
        _timestepWeights = settings.LossWeighting == LossWeighting.None
            ? null
            : DiffusionLoss.TimestepWeights(schedule, settings.LossWeighting, settings.Prediction);
        Settings = settings;
        _device = device;
        _generator = new Generator((ulong)settings.Seed, CPU);
        _parameters = model.parameters().ToArray();
        _optimizer = optim.AdamW(_parameters, lr: settings.LearningRate, weight_decay: settings.WeightDecay);
        Ema = new ExponentialMovingAverage(model, emaModel, settings.EmaDecay);
        if (settings.Precision == Precision.Bf16Mixed)
            _lowPrecision = new LowPrecisionCopy(model, bfloat16);
    }

    /// <summary>The network being trained.</summary>
    public UNet Model { get; }

    /// <summary>The EMA of the weights (the network used for sampling).</summary>
    public ExponentialMovingAverage Ema { get; }

    /// <summary>The settings.</summary>
    public TrainingSettings Settings { get; }

    /// <summary>Optimizer steps taken.</summary>
    public long Step { get; private set; }

    /// <summary>How often a step was recomputed because its loss or gradients were not finite.</summary>
    public int Retries { get; private set; }

    private const int MaxAttempts = 3;

    /// <summary>The loss of the last successful step (NaN before the first).</summary>
    public float LastFiniteLoss { get; private set; } = float.NaN;

    /// <summary>
    /// One optimizer step on a batch x0 [B, C, H, W] in [-1, 1] (any device). Returns the loss. Throws
    /// <see cref="NonFiniteLossException"/> (and leaves the weights untouched) when the loss is NaN or infinite.
    /// </summary>
    public float TrainStep(Tensor x0)
    {
        Model.train();
        _lowPrecision?.Network.train();
        _lowPrecision?.Refresh();                     // round the float32 master weights into the bfloat16 copy
        float lossValue;
        using (var scope = NewDisposeScope())
        {
            long b = x0.shape[0];
            var x = x0.device == _device ? x0 : x0.to(_device);
            // t ~ Uniform({0, ..., T-1}) and eps ~ N(0, I), drawn on the CPU generator so runs are reproducible and resumable.
            var t = randint(0, _schedule.Timesteps, new long[] { b }, dtype: int64, device: CPU, generator: _generator).to(_device);
            var eps = randn(x.shape, dtype: float32, device: CPU, generator: _generator).to(_device);
            var xt = _schedule.AddNoise(x, eps, t);                      // eq. 4
            var target = DiffusionLoss.Target(_schedule, Settings.Prediction, x, eps, t);   // eps, x_0 or v
            var weights = _timestepWeights is null ? null : _schedule.Extract(_timestepWeights, t, 1);
            // Self-conditioning (Analog Bits, algorithm 1): a fair coin per batch, from the loop's generator (reproducible, resumable).
            bool useEstimate = Settings.SelfConditioning
                && rand(new long[] { 1 }, dtype: float64, device: CPU, generator: _generator).item<double>() < 0.5;
            lossValue = float.NaN;
            for (int attempt = 1; ; attempt++)
            {
                using var attemptScope = NewDisposeScope();
                Tensor input = xt;
                if (Settings.SelfConditioning)
                {
                    Tensor? selfCondition = null;
                    if (useEstimate)
                    {
                        using (no_grad())
                        {
                            var first = Forward(SelfConditioning.Input(xt, null), t);
                            selfCondition = SelfConditioning.EstimateX0(_schedule, Settings.Prediction, first, xt, t);
                        }
                    }
                    input = SelfConditioning.Input(xt, selfCondition);   // zeros when no estimate
                }
                var predicted = Forward(input, t);          // float32 in both precisions: the loss is computed in float32
                var loss = Settings.LearnedVariance
                    ? VariationalBound.HybridLoss(_schedule, Settings.Prediction, predicted, target, x, xt, t, weights)   // Improved DDPM eq. 16
                    : DiffusionLoss.WeightedMse(predicted, target, weights);   // eq. 14 (L_simple) when unweighted epsilon
                lossValue = loss.item<float>();
                double norm = double.NaN;
                _optimizer.zero_grad();
                if (float.IsFinite(lossValue))
                {
                    loss.backward();
                    _lowPrecision?.AccumulateGradientsInto();   // bfloat16 gradients -> float32 master gradients
                    norm = Settings.GradientClipNorm > 0
                        ? nn.utils.clip_grad_norm_(_parameters, Settings.GradientClipNorm)
                        : nn.utils.clip_grad_norm_(_parameters, double.PositiveInfinity);
                    if (double.IsFinite(norm)) break;
                }
                // A non-finite loss or gradient. On some machines (seen on AMD EPYC VMs) the CPU kernels return NaN
                // at random now and then (see TorchRuntime); such a fault does not repeat, so the same step is
                // recomputed. A failure that persists is a real divergence (or NaN input) and stops training.
                if (attempt == MaxAttempts)
                {
                    _optimizer.zero_grad();
                    if (!float.IsFinite(lossValue))
                        throw new NonFiniteLossException(Step + 1, lossValue, LastFiniteLoss);
                    throw new NonFiniteLossException(Step + 1, float.NaN, LastFiniteLoss,
                        $"the gradients are not finite ({MaxAttempts} attempts) although the loss is {lossValue:G6}");
                }
                Retries++;
            }
            _optimizer.step();
        }
        Ema.Update();
        Step++;
        LastFiniteLoss = lossValue;
        return lossValue;
    }

    /// <summary>The network's output in float32: the float32 network, or the bfloat16 working copy in mixed precision.</summary>
    private Tensor Forward(Tensor x, Tensor t) => _lowPrecision is { } copy ? copy.Forward(x, t) : Model.forward(x, t);

    /// <summary>Writes the loop's full state (step, generator, weights, EMA, optimizer).</summary>
    public void SaveState(BinaryWriter writer)
    {
        writer.Write(Step);                       // long: optimizer steps
        writer.Write(Ema.Updates);                // long: EMA updates
        using (var state = _generator.get_state())
        {
            var bytes = state.data<byte>().ToArray();
            writer.Write(bytes.Length);           // int + bytes: generator state
            writer.Write(bytes);
        }
        Model.save(writer);                       // trained weights
        Ema.Shadow.save(writer);                  // EMA weights
        _optimizer.save_state_dict(writer);       // AdamW moments
    }

    /// <summary>Restores the state written by <see cref="SaveState"/>.</summary>
    public void LoadState(BinaryReader reader)
    {
        Step = reader.ReadInt64();
        Ema.Updates = reader.ReadInt64();
        int n = reader.ReadInt32();
        var bytes = reader.ReadBytes(n);
        if (bytes.Length != n) throw new EndOfStreamException("Checkpoint is truncated (generator state).");
        using (var state = tensor(bytes, dtype: uint8))
            _generator.set_state(state);
        Model.load(reader);
        Ema.Shadow.load(reader);
        _optimizer.load_state_dict(reader);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _generator.Dispose();
        _lowPrecision?.Dispose();
        (_optimizer as IDisposable)?.Dispose();
    }
}

/// <summary>Thrown when the training loss becomes NaN or infinite.</summary>
public sealed class NonFiniteLossException : InvalidOperationException
{
    /// <summary>Creates the exception for optimizer step <paramref name="step"/>.</summary>
    public NonFiniteLossException(long step, float loss, float lastFiniteLoss, string? what = null)
        : base($"Training stopped at step {step}: {what ?? $"the loss is {loss}"}" +
               (float.IsNaN(lastFiniteLoss) ? " at the first step" : $"; the last finite loss was {lastFiniteLoss:G6} at step {step - 1}") +
               ". Lower the learning rate, check the input for NaN pixels, or resume from the last checkpoint.")
    {
        StepNumber = step;
        Loss = loss;
        LastFiniteLoss = lastFiniteLoss;
    }

    /// <summary>The loss of the step before (NaN when the first step failed).</summary>
    public float LastFiniteLoss { get; }

    /// <summary>The step whose loss was not finite.</summary>
    public long StepNumber { get; }

    /// <summary>The loss value (NaN or infinity).</summary>
    public float Loss { get; }
}
