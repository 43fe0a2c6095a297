using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Conditions;

/// <summary>
/// Self-conditioning (Chen, Zhang &amp; Hinton 2022, "Analog Bits: Generating Discrete Data using Diffusion Models with
/// Self-Conditioning", section 3, algorithms 1 and 2): the network sees, besides x_t, its own previous estimate of x_0,
/// concatenated along the channels, f(concat(x_t, x0_hat), t). In training x0_hat is zero half of the time and otherwise the
/// network's own estimate from a first forward pass under stop-gradient; in sampling it is the estimate of the previous step
/// (zero at the first step).
/// </summary>
internal static class SelfConditioning
{
    /// <summary>concat(x_t, x0_hat) along dimension 1; a null <paramref name="selfCondition"/> is zeros shaped like x_t.</summary>
    public static Tensor Input(Tensor xt, Tensor? selfCondition)
    {
        ArgumentNullException.ThrowIfNull(xt);
        using var scope = NewDisposeScope();
        var cond = selfCondition ?? zeros_like(xt);
        return cat(new[] { xt, cond }, 1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The x_0 estimate that the network output <paramref name="modelOutput"/> (of kind <paramref name="prediction"/>; with a learned
    /// variance [B, 2C, ...], only the prediction half is used) implies for x_t <paramref name="xt"/> at the per-sample timesteps
    /// <paramref name="t"/> [B], clamped to [-1, 1] and detached from the graph.
    /// </summary>
    public static Tensor EstimateX0(DiffusionSchedule schedule, PredictionType prediction, Tensor modelOutput, Tensor xt, Tensor t)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(xt);
        ArgumentNullException.ThrowIfNull(t);
        SchedulerCore.CheckPrediction(prediction, nameof(prediction));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (pred, _) = SchedulerCore.SplitOutput(modelOutput.detach(), xt);
        var tt = t.to(xt.device);
        int ndim = (int)xt.dim();
        var alpha = DiffusionSchedule.ExtractAs(schedule.AlphaBars.Select(Math.Sqrt).ToArray(), tt, ndim, xt.dtype);
        var sigma = DiffusionSchedule.ExtractAs(schedule.AlphaBars.Select(a => Math.Sqrt(1.0 - a)).ToArray(), tt, ndim, xt.dtype);
        // As SchedulerCore.ToX0AndEps, per sample: eps: x_0 = (x_t - sigma eps)/alpha; x_0 itself; v: x_0 = alpha x_t - sigma v.
        var x0 = prediction switch
        {
            PredictionType.Epsilon => (xt - sigma * pred) / alpha,
            PredictionType.Sample => pred.clone(),
            _ => alpha * xt - sigma * pred,
        };
        return SchedulerCore.ClampUnit(x0).detach().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// A stateful denoiser for one sampling run (one batch) of <see cref="Sampling.DiffusionSampler.Sample"/>: each call runs
    /// <paramref name="network"/> on concat(x_t, x0_hat), where x0_hat is the x_0 estimate of the previous call (zeros at the
    /// first), computed with <see cref="SchedulerCore.ToX0AndEps"/> at that call's timestep and clamped to [-1, 1]
    /// (Analog Bits, algorithm 2). Create a new one for every batch; dispose it afterwards.
    /// </summary>
    public static SelfConditionedDenoiser Denoiser(Func<Tensor, Tensor, Tensor> network, DiffusionSchedule schedule, PredictionType prediction)
    {
        ArgumentNullException.ThrowIfNull(network);
        return new((x, t, x0) => network(Input(x, x0), t), schedule, prediction);
    }

    /// <summary>
    /// As <see cref="Denoiser(Func{Tensor, Tensor, Tensor}, DiffusionSchedule, PredictionType)"/> for a network that takes the
    /// self-condition as its own argument, (x_t, t, x0_hat) -> output, instead of concatenated channels (the ONNX graph's
    /// <c>self_condition</c> input): x0_hat is zeros at the first call.
    /// </summary>
    public static SelfConditionedDenoiser Denoiser(Func<Tensor, Tensor, Tensor, Tensor> network, DiffusionSchedule schedule, PredictionType prediction) =>
        new(network, schedule, prediction);
}

/// <summary>The per-batch state of self-conditioned sampling (see <see cref="SelfConditioning.Denoiser(Func{Tensor, Tensor, Tensor}, DiffusionSchedule, PredictionType)"/>). Not thread-safe: one per batch.</summary>
internal sealed class SelfConditionedDenoiser : IDisposable
{
    private readonly Func<Tensor, Tensor, Tensor, Tensor> _network;
    private readonly DiffusionSchedule _schedule;
    private readonly PredictionType _prediction;
    private Tensor? _lastX0;

    /// <summary>Creates the state; <paramref name="network"/> maps (x_t, t, x0_hat) to the network output.</summary>
    internal SelfConditionedDenoiser(Func<Tensor, Tensor, Tensor, Tensor> network, DiffusionSchedule schedule, PredictionType prediction)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(schedule);
        _network = network;
        _schedule = schedule;
        _prediction = SchedulerCore.CheckPrediction(prediction, nameof(prediction));
    }

    /// <summary>The x_0 estimate of the last call (null before the first); owned by this object.</summary>
    public Tensor? LastX0 => _lastX0;

    /// <summary>
    /// Runs the network on (x_t, previous x0_hat; zeros at the first call) and remembers this step's x0_hat. All timesteps in
    /// <paramref name="t"/> must be equal (as in the sampler). Returns the network output.
    /// </summary>
    public Tensor Denoise(Tensor x, Tensor t)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(t);
        if (_lastX0 is not null && !_lastX0.shape.SequenceEqual(x.shape))
            throw new ArgumentException($"The batch changed shape between steps ([{string.Join(", ", _lastX0.shape)}] then [{string.Join(", ", x.shape)}]); use one denoiser per batch.", nameof(x));
        Tensor output;
        Tensor x0;
        using (var scope = NewDisposeScope())
        {
            var selfCondition = _lastX0 ?? zeros_like(x);
            output = _network(x, t, selfCondition).MoveToOuterDisposeScope();
            var (pred, _) = SchedulerCore.SplitOutput(output, x);
            var (est, _) = SchedulerCore.ToX0AndEps(pred, x, AlphaBarAt(t), _prediction);
            x0 = SchedulerCore.ClampUnit(est).MoveToOuterDisposeScope();
        }

        x0.DetachFromDisposeScope();
        _lastX0?.Dispose();
        _lastX0 = x0;
        return output;
    }

    /// <summary>alpha_bar at the batch's timestep: the schedule's for an integer one; for a continuous one (sigma-space samplers)
    /// 1 / (sigma^2 + 1) with sigma interpolated in log space between the bracketing training timesteps.</summary>
    private double AlphaBarAt(Tensor t)
    {
        if (!t.is_floating_point()) return _schedule.AlphaBar((int)t[0].item<long>());
        double tc = t[0].to_type(ScalarType.Float64).item<double>();
        return SigmaSpace.AlphaBar(SigmaSpace.SigmaAtLog(tc, _sigmas ??= SigmaSpace.TrainingSigmas(_schedule)));
    }

    private double[]? _sigmas;

    /// <inheritdoc/>
    public void Dispose()
    {
        _lastX0?.Dispose();
        _lastX0 = null;
    }
}
