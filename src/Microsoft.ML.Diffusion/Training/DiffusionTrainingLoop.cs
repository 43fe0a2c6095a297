using Microsoft.ML.Diffusion.Conditions;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Schedules;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Training;

/// <summary>Optimisation settings of <see cref="DiffusionTrainingLoop"/>.</summary>
internal sealed record TrainingSettings
{
    /// <summary>AdamW learning rate.</summary>
    public double LearningRate { get; init; } = 2e-4;
    /// <summary>AdamW decoupled weight decay.</summary>
    public double WeightDecay { get; init; } = 1e-6;
    /// <summary>Optimizer steps of the linear learning-rate warm-up (0: none).</summary>
    public long WarmupSteps { get; init; }
    /// <summary>The learning rate after the warm-up (<see cref="LearningRateCurve"/>).</summary>
    public LearningRateSchedule LearningRateSchedule { get; init; } = LearningRateSchedule.Constant;
    /// <summary>The run's total optimizer steps; needed by <see cref="LearningRateSchedule.Cosine"/> and a cool-down.</summary>
    public long? TotalSteps { get; init; }
    /// <summary>With <see cref="LearningRateSchedule.Constant"/>: the last steps of the run, over which the rate falls linearly to
    /// zero (0: none; <see cref="LearningRateCurve"/>).</summary>
    public long DecaySteps { get; init; }
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
    /// with the hybrid loss L_simple + 0.001 L_vlb (eq. 16; <see cref="DiffusionLoss.HybridLoss"/>).</summary>
    public bool LearnedVariance { get; init; }
    /// <summary>Self-conditioning (Chen, Zhang &amp; Hinton 2022, "Analog Bits", section 3, algorithm 1): the network takes
    /// 2C input channels, concat(x_t, x0_hat). With probability 0.5 per batch x0_hat is the network's own x_0 estimate from a
    /// first forward pass with a zero self-condition under stop-gradient (clamped to [-1, 1]); otherwise it is zeros.
    /// See <see cref="Conditions.SelfConditioning"/>.</summary>
    public bool SelfConditioning { get; init; }
    /// <summary>Super-resolution conditioning (SR3, Saharia et al. 2021): when &gt; 0, the network's input also carries the
    /// bicubic upsampling of x_0 average-pooled by this factor (<see cref="Conditions.LowResolutionCondition.FromImage"/>),
    /// appended after x_t (and the self-condition). 0 (default) trains an unconditional model.</summary>
    public int LowResolutionFactor { get; init; }
    /// <summary>Classes of a class-conditional network (0: unconditional); <see cref="DiffusionTrainingLoop.TrainStep"/> then
    /// takes labels.</summary>
    public int NumClasses { get; init; }
    /// <summary>Probability with which each label is replaced by the null label (classifier-free guidance, Ho &amp; Salimans
    /// 2022, algorithm 1, p_uncond), so the same network learns the unconditional model.</summary>
    public double ConditionDropProbability { get; init; }
    /// <summary>The number format of the forward and backward passes: float32 (default) or bfloat16 mixed precision
    /// (<see cref="Precision.Bf16Mixed"/>: a bfloat16 working copy of the network computes, the float32 weights, AdamW moments,
    /// gradient clipping, EMA and loss stay float32).</summary>
    public Precision Precision { get; init; } = Precision.Fp32;
    /// <summary>Offset noise (Guttenberg 2023): eps = randn(x) + OffsetNoise * randn(B, C, 1, 1) (<see cref="DiffusionTrainingLoop.TrainingNoise"/>);
    /// 0 (default) draws plain Gaussian noise and nothing more from the generator.</summary>
    public double OffsetNoise { get; init; }
    /// <summary>The objective: DDPM (default) or flow matching (<see cref="DiffusionTrainingLoop.FlowMatchingBatch"/>).</summary>
    public DiffusionObjective Objective { get; init; } = DiffusionObjective.Ddpm;
}

/// <summary>
/// The DDPM training step (Ho et al. 2020, algorithm 1): t ~ Uniform{0..T-1}, eps ~ N(0, I),
/// x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (eq. 4), minimise || eps - eps_theta(x_t, t) ||^2 (eq. 14),
/// with AdamW, gradient clipping and an EMA of the weights. The target may instead be x_0 or v and the per-sample
/// loss may carry Min-SNR weights (<see cref="DiffusionLoss"/>). With <see cref="DiffusionObjective.FlowMatching"/> the step is
/// flow matching's instead (<see cref="FlowMatchingBatch"/>, MSE to the velocity). Knows TorchSharp only.
/// </summary>
internal sealed class DiffusionTrainingLoop : TrainingLoop
{
    private readonly DiffusionSchedule _schedule;
    private readonly double[]? _timestepWeights;                    // null: unweighted MSE
    private readonly LowPrecisionCopy? _lowPrecision;               // the bfloat16 working copy (Precision.Bf16Mixed)

    /// <summary>Creates the loop. The network and its EMA copy must already be on <paramref name="device"/>.</summary>
    public DiffusionTrainingLoop(UNet model, UNet emaModel, DiffusionSchedule schedule, TrainingSettings settings, Device device)
        : base(Checked(model, settings), settings.Seed, device,
               parameters => ScalarSafeOptimizers.AdamW(parameters, settings.LearningRate, settings.WeightDecay),
               new LearningRatePlan(settings.LearningRate, settings.WarmupSteps, settings.LearningRateSchedule, settings.TotalSteps, settings.DecaySteps),
               settings.GradientClipNorm)
    {
        Model = model;
        _schedule = schedule;
        _timestepWeights = settings.LossWeighting == LossWeighting.None
            ? null
            : DiffusionLoss.TimestepWeights(schedule, settings.LossWeighting, settings.Prediction);
        Settings = settings;
        Ema = new ExponentialMovingAverage(model, emaModel, settings.EmaDecay);
        if (settings.Precision == Precision.Bf16Mixed)
            _lowPrecision = new LowPrecisionCopy(model, bfloat16);
    }

    private static UNet Checked(UNet model, TrainingSettings settings)
    {
        if (!Enum.IsDefined(settings.Prediction))
            throw new ArgumentOutOfRangeException(nameof(settings), settings.Prediction, $"Unknown prediction type {settings.Prediction}.");
        if (!Enum.IsDefined(settings.LossWeighting))
            throw new ArgumentOutOfRangeException(nameof(settings), settings.LossWeighting, $"Unknown loss weighting {settings.LossWeighting}.");
        if (!Enum.IsDefined(settings.Precision))
            throw new ArgumentOutOfRangeException(nameof(settings), settings.Precision, $"Unknown precision {settings.Precision}.");
        if (!Enum.IsDefined(settings.Objective))
            throw new ArgumentOutOfRangeException(nameof(settings), settings.Objective, $"Unknown objective {settings.Objective}.");
        if (settings.Objective == DiffusionObjective.FlowMatching && (settings.LearnedVariance || settings.SelfConditioning || settings.LossWeighting != LossWeighting.None))
            throw new ArgumentException("Flow matching trains the plain MSE to the velocity: no learned variance, self-conditioning or loss weighting.", nameof(settings));
        if (settings.WarmupSteps < 0)
            throw new ArgumentOutOfRangeException(nameof(settings), settings.WarmupSteps, "WarmupSteps must be 0 or more.");
        if (settings.LearningRateSchedule == LearningRateSchedule.Cosine && settings.TotalSteps is null)
            throw new ArgumentException("A cosine learning-rate schedule needs TrainingSettings.TotalSteps.", nameof(settings));
        if (settings.DecaySteps < 0)
            throw new ArgumentOutOfRangeException(nameof(settings), settings.DecaySteps, "DecaySteps must be 0 or more.");
        if (settings.DecaySteps > 0 && (settings.LearningRateSchedule != LearningRateSchedule.Constant || settings.TotalSteps is null))
            throw new ArgumentException("A learning-rate cool-down (DecaySteps) needs the Constant schedule and TrainingSettings.TotalSteps.", nameof(settings));
        if (settings.NumClasses != model.Config.NumClasses)
            throw new ArgumentException(
                $"TrainingSettings.NumClasses is {settings.NumClasses} but the network has {model.Config.NumClasses} classes.", nameof(settings));
        return model;
    }

    /// <summary>The network being trained.</summary>
    public UNet Model { get; }

    /// <summary>The EMA of the weights (the network used for sampling).</summary>
    public ExponentialMovingAverage Ema { get; }

    /// <summary>The settings.</summary>
    public TrainingSettings Settings { get; }

    /// <summary>
    /// One optimizer step on a batch x0 [B, C, H, W] in [-1, 1] (any device) with, for a class-conditional network, its
    /// labels [B] (int64 class indices 0..NumClasses, NumClasses = the null label). Returns the loss. Throws
    /// <see cref="NonFiniteLossException"/> (and leaves the weights untouched) when the loss is NaN or infinite.
    /// </summary>
    public float TrainStep(Tensor x0, Tensor? labels = null)
    {
        if (Settings.NumClasses > 0 && labels is null)
            throw new ArgumentNullException(nameof(labels), $"This network is class-conditional ({Settings.NumClasses} classes); TrainStep needs the batch's labels.");
        if (Settings.NumClasses == 0 && labels is not null)
            throw new ArgumentException("This network is unconditional (TrainingSettings.NumClasses = 0); it takes no labels.", nameof(labels));
        if (labels is not null && (labels.dim() != 1 || labels.shape[0] != x0.shape[0]))
            throw new ArgumentException($"labels must have shape [{x0.shape[0]}] (one per image); got [{string.Join(", ", labels.shape)}].", nameof(labels));
        if (labels is not null)
        {
            long lo, hi;
            using (var lowest = labels.min()) lo = lowest.item<long>();
            using (var highest = labels.max()) hi = highest.item<long>();
            if (lo < 0 || hi > Settings.NumClasses)
                throw new ArgumentOutOfRangeException(nameof(labels),
                    $"labels must lie in 0..{Settings.NumClasses - 1} (or {Settings.NumClasses}, the null label); got {lo}..{hi}.");
        }
        Model.train();
        _lowPrecision?.Network.train();
        _lowPrecision?.Refresh();                     // round the float32 master weights into the bfloat16 copy
        using var scope = NewDisposeScope();
        long b = x0.shape[0];
        var x = x0.device == Device ? x0 : x0.to(Device);
        Tensor t, xt, target;
        Tensor? weights = null;
        if (Settings.Objective == DiffusionObjective.FlowMatching)
        {
            (t, xt, target) = FlowMatchingBatch(x, _schedule.Timesteps, Settings.OffsetNoise, Generator);
        }
        else
        {
            // t ~ Uniform({0, ..., T-1}) and eps ~ N(0, I), drawn on the CPU generator so runs are reproducible and resumable.
            t = randint(0, _schedule.Timesteps, new long[] { b }, dtype: int64, device: CPU, generator: Generator).to(Device);
            var eps = TrainingNoise(x.shape, Settings.OffsetNoise, Generator).to(Device);
            xt = _schedule.AddNoise(x, eps, t);                      // eq. 4
            target = DiffusionLoss.Target(_schedule, Settings.Prediction, x, eps, t);   // eps, x_0 or v
            weights = _timestepWeights is null ? null : _schedule.Extract(_timestepWeights, t, 1);
        }
        // SR3: the network sees upsample(downsample(x_0)) as extra channels (null when unconditional).
        var lowResolution = Settings.LowResolutionFactor > 0 ? LowResolutionCondition.FromImage(x, Settings.LowResolutionFactor) : null;
        // Self-conditioning (Analog Bits, algorithm 1): a fair coin per batch, from the loop's generator (reproducible, resumable).
        bool useEstimate = Settings.SelfConditioning
            && rand(new long[] { 1 }, dtype: float64, device: CPU, generator: Generator).item<double>() < 0.5;
        // Classifier-free guidance training (Ho & Salimans 2022, algorithm 1): c <- null label with probability p_uncond.
        Tensor? y = null;
        if (labels is not null)
        {
            var drop = rand(new long[] { b }, dtype: float64, device: CPU, generator: Generator) < Settings.ConditionDropProbability;
            var cpuLabels = labels.to(CPU).to_type(int64);
            y = where(drop, full(new long[] { b }, (long)Settings.NumClasses, dtype: int64), cpuLabels).to(Device);
        }
        return OptimizerStep(() =>
        {
            Tensor input = xt;
            if (Settings.SelfConditioning)
            {
                Tensor? selfCondition = null;
                if (useEstimate)
                {
                    using (no_grad())
                    {
                        var first = Forward(ConditionedNetwork.AppendChannels(SelfConditioning.Input(xt, null), lowResolution), t, y);
                        selfCondition = SelfConditioning.EstimateX0(_schedule, Settings.Prediction, first, xt, t);
                    }
                }
                input = SelfConditioning.Input(xt, selfCondition);   // zeros when no estimate
            }
            var predicted = Forward(ConditionedNetwork.AppendChannels(input, lowResolution), t, y);   // float32 in both precisions
            return Settings.LearnedVariance
                ? DiffusionLoss.HybridLoss(_schedule, Settings.Prediction, predicted, target, x, xt, t, weights)   // Improved DDPM eq. 16
                : DiffusionLoss.WeightedMse(predicted, target, weights);   // eq. 14 (L_simple) when unweighted epsilon
        });
    }

    /// <summary>
    /// A flow-matching batch (Liu et al. 2023, rectified flow, eq. 1; Lipman et al. 2023, eq. 20-23, the optimal-transport path with
    /// sigma_min = 0, with time reversed as in Stable Diffusion 3: t = 0 is data, t = 1 noise): t ~ Uniform[0, 1) per image (float64, then float32), eps = <see cref="TrainingNoise"/>, x_t = (1 - t) x_0 + t eps,
    /// the target velocity v = eps - x_0 = dx_t/dt, and the network's time input t * <paramref name="timeScale"/> (float32, [B]). Draws
    /// t, then the noise, from <paramref name="generator"/>; the tensors are on x0's device, in the caller's dispose scope.
    /// </summary>
    internal static (Tensor NetworkTime, Tensor Xt, Tensor Velocity) FlowMatchingBatch(Tensor x0, int timeScale, double offsetNoise, Generator generator)
    {
        long b = x0.shape[0];
        var u = rand(new long[] { b }, dtype: float64, device: CPU, generator: generator);
        var eps = TrainingNoise(x0.shape, offsetNoise, generator).to(x0.device);
        var shape = x0.shape.Select((d, i) => i == 0 ? d : 1L).ToArray();
        var tb = u.to_type(x0.dtype).reshape(shape).to(x0.device);
        var velocity = eps - x0;                                     // v = eps - x_0
        var xt = x0 + tb * velocity;                                 // x_t = (1 - t) x_0 + t eps
        using Scalar scale = ((double)timeScale).ToScalar();
        var networkTime = u.mul(scale).to_type(float32).to(x0.device);
        return (networkTime, xt, velocity);
    }

    /// <summary>
    /// The training noise of a batch shaped <paramref name="shape"/> [B, C, ...], float32 on the CPU, drawn from <paramref name="generator"/>:
    /// eps = randn(shape) + <paramref name="offset"/> * randn(B, C, 1, ..., 1) (offset noise, Guttenberg 2023: a per-image, per-channel
    /// constant). With offset 0 it is randn(shape) alone, and the generator draws nothing more (the training of earlier releases).
    /// </summary>
    internal static Tensor TrainingNoise(long[] shape, double offset, Generator generator)
    {
        var eps = randn(shape, dtype: float32, device: CPU, generator: generator);
        if (offset == 0) return eps;
        var channelShape = shape.Select((d, i) => i < 2 ? d : 1L).ToArray();
        using var shift = randn(channelShape, dtype: float32, device: CPU, generator: generator);
        using Scalar scale = offset.ToScalar();
        eps.add_(shift, scale);                                     // broadcast over the spatial dimensions
        return eps;
    }

    /// <summary>Mixed precision: the bfloat16 copy's gradients go to the float32 master weights before clipping.</summary>
    protected override void AfterBackward() => _lowPrecision?.AccumulateGradientsInto();

    /// <inheritdoc/>
    protected override void AfterFailedAttempt() => _lowPrecision?.ClearGradients();

    /// <summary>The EMA of the weights follows every step.</summary>
    protected override void AfterOptimizerStep() => Ema.Update();

    /// <summary>The network's output in float32: the float32 network, or the bfloat16 working copy in mixed precision.</summary>
    private Tensor Forward(Tensor x, Tensor t, Tensor? y) => _lowPrecision is { } copy ? copy.Forward(x, t, y) : Model.forward(x, t, y);

    /// <inheritdoc/>
    protected override void WriteCounters(BinaryWriter writer) => writer.Write(Ema.Updates);   // long: EMA updates

    /// <inheritdoc/>
    protected override void ReadCounters(BinaryReader reader) => Ema.Updates = reader.ReadInt64();

    /// <inheritdoc/>
    protected override IEnumerable<(nn.Module Module, string What)> CheckpointModules =>
        new[] { ((nn.Module)Model, "The checkpoint's weights"), (Ema.Shadow, "The checkpoint's EMA weights") };

    /// <inheritdoc/>
    public override void Dispose()
    {
        _lowPrecision?.Dispose();
        base.Dispose();
    }
}
