using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Conditions;

/// <summary>
/// The network call of one sampling batch with its extra conditioning inputs, the one mechanism behind conditional
/// super-resolution and class conditioning:
/// <list type="bullet">
/// <item>image channels appended after the network's own input (x_t, and x0_hat when self-conditioned), as SR3 /
/// guided-diffusion's SuperResModel do: concat(x_t, upsample(low_res));</item>
/// <item>class labels for the network's class embedding, with classifier-free guidance (Ho &amp; Salimans 2022, eq. 6, in the
/// form diffusers uses): eps = eps_uncond + w (eps_cond - eps_uncond), both branches computed in one forward pass of 2B
/// images (conditional half first, then the null label). w = 1 runs the conditional branch alone and w = 0 the
/// unconditional one (B images). With a learned variance only the first <c>predictionChannels</c> channels are guided; the
/// variance channels come from the conditional branch, as in GLIDE.</item>
/// </list>
/// One per sampling batch; it owns copies of the condition on the network's device. It is the innermost denoiser, so the
/// self-conditioning wrapper (<see cref="SelfConditionedDenoiser"/>) composes with it (both branches see the same x0_hat).
/// </summary>
internal sealed class ConditionedNetwork : IDisposable
{
    private readonly Func<Tensor, Tensor, Tensor?, Tensor>? _network;
    private readonly Func<Tensor, Tensor, Tensor?, Tensor?, Tensor?, Tensor>? _separate;
    private readonly float _guidanceScale;
    private readonly int _predictionChannels;
    private Tensor? _channels;
    private Tensor? _channelsTwice;                // the low-resolution image repeated for a guided 2B batch (separate inputs)
    private Tensor? _labels;
    private Tensor? _nullLabels;
    private bool _disposed;

    /// <summary>Creates the call.</summary>
    /// <param name="network">(input, t, labels) -> output; labels null for an unconditional network.</param>
    /// <param name="channels">[B, Cc, S, S] appended to every input (any device; copied to <paramref name="device"/>); null: none.</param>
    /// <param name="labels">[B] int64 class indices (the null label = <paramref name="nullLabel"/> allowed); null: no labels.</param>
    /// <param name="device">The network's device.</param>
    /// <param name="guidanceScale">Classifier-free guidance weight w &gt;= 0 (1: plain conditional).</param>
    /// <param name="nullLabel">The null label's index (the number of classes).</param>
    /// <param name="predictionChannels">Output channels that carry the prediction (the image channels); the rest (a learned
    /// variance) are taken from the conditional branch.</param>
    public ConditionedNetwork(Func<Tensor, Tensor, Tensor?, Tensor> network, Tensor? channels, Device device,
        Tensor? labels = null, float guidanceScale = 1f, int nullLabel = 0, int predictionChannels = 0)
        : this(device, channels, labels, guidanceScale, nullLabel, predictionChannels)
    {
        ArgumentNullException.ThrowIfNull(network);
        _network = network;
    }

    /// <summary>
    /// The call of a network that takes its conditions as separate inputs (the ONNX graph:
    /// <see cref="Onnx.OnnxRuntimeNetwork"/>) rather than as channels appended to x_t: it receives (x_t, t, labels, x0_hat or
    /// null, <paramref name="lowResolution"/> or null), the low-resolution image as it is (the network upsamples it).
    /// </summary>
    /// <param name="separateInputs">(x_t, t, labels, self-condition, low-resolution image) -> output.</param>
    /// <param name="lowResolution">[B, C, s, s], the low-resolution image of a super-resolution model (copied to
    /// <paramref name="device"/>); null: none.</param>
    /// <param name="device">The network's device.</param>
    /// <param name="labels">As for the other constructor.</param>
    /// <param name="guidanceScale">As for the other constructor.</param>
    /// <param name="nullLabel">As for the other constructor.</param>
    /// <param name="predictionChannels">As for the other constructor.</param>
    public static ConditionedNetwork WithSeparateInputs(Func<Tensor, Tensor, Tensor?, Tensor?, Tensor?, Tensor> separateInputs, Tensor? lowResolution,
        Device device, Tensor? labels = null, float guidanceScale = 1f, int nullLabel = 0, int predictionChannels = 0)
    {
        ArgumentNullException.ThrowIfNull(separateInputs);
        return new ConditionedNetwork(device, lowResolution, labels, guidanceScale, nullLabel, predictionChannels, separateInputs);
    }

    private ConditionedNetwork(Device device, Tensor? channels, Tensor? labels, float guidanceScale, int nullLabel, int predictionChannels,
        Func<Tensor, Tensor, Tensor?, Tensor?, Tensor?, Tensor>? separateInputs = null)
    {
        _separate = separateInputs;
        if (!(guidanceScale >= 0) || float.IsInfinity(guidanceScale))
            throw new ArgumentOutOfRangeException(nameof(guidanceScale), guidanceScale, "The guidance scale must be a finite number >= 0.");
        if (labels is not null && labels.dim() != 1)
            throw new ArgumentException($"labels must be a vector [B]; got shape [{string.Join(", ", labels.shape)}].", nameof(labels));
        _guidanceScale = guidanceScale;
        _predictionChannels = predictionChannels;
        _channels = OwnedCopy(channels, float32, device);
        if (labels is not null)
        {
            _labels = OwnedCopy(labels, int64, device);
            using var nulls = full(new long[] { labels.shape[0] }, (long)nullLabel, dtype: int64);
            _nullLabels = OwnedCopy(nulls, int64, device);
        }
    }

    /// <summary>The classifier-free guidance weight w.</summary>
    public float GuidanceScale => _guidanceScale;

    /// <summary>True when a step runs both branches in one batch of 2B images.</summary>
    public bool Guided => _labels is not null && _guidanceScale != 1f && _guidanceScale != 0f;

    private static Tensor? OwnedCopy(Tensor? x, ScalarType dtype, Device device)
    {
        if (x is null) return null;
        Tensor copy;
        using (var scope = NewDisposeScope())
            copy = x.detach().to_type(dtype).to(device).clone().MoveToOuterDisposeScope();
        copy.DetachFromDisposeScope();
        return copy;
    }

    /// <summary>concat(input, condition channels) along dimension 1; <paramref name="channels"/> null returns
    /// <paramref name="input"/> itself.</summary>
    public static Tensor AppendChannels(Tensor input, Tensor? channels)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (channels is null) return input;
        if (channels.shape[0] != input.shape[0] || channels.shape[2] != input.shape[2] || channels.shape[3] != input.shape[3])
            throw new ArgumentException(
                $"The condition channels have shape [{string.Join(", ", channels.shape)}]; the network input has [{string.Join(", ", input.shape)}] (batch and size must match).",
                nameof(channels));
        return cat(new[] { input, channels }, 1);
    }

    /// <summary>
    /// Classifier-free guidance of two network outputs [B, K, S, S] (Ho &amp; Salimans 2022, eq. 6, as diffusers writes it):
    /// eps_uncond + w (eps_cond - eps_uncond) on the first <paramref name="predictionChannels"/> channels; any further
    /// channels (a learned variance) are the conditional branch's (GLIDE).
    /// </summary>
    public static Tensor Guide(Tensor conditional, Tensor unconditional, float guidanceScale, int predictionChannels)
    {
        ArgumentNullException.ThrowIfNull(conditional);
        ArgumentNullException.ThrowIfNull(unconditional);
        using var scope = NewDisposeScope();
        long k = conditional.shape[1];
        int pc = predictionChannels <= 0 || predictionChannels > k ? (int)k : predictionChannels;
        var cond = conditional.narrow(1, 0, pc);
        var uncond = unconditional.narrow(1, 0, pc);
        var guided = uncond + (cond - uncond) * guidanceScale;
        if (pc < k) guided = cat(new[] { guided, conditional.narrow(1, pc, k - pc) }, 1);
        return guided.MoveToOuterDisposeScope();
    }

    /// <summary>Runs the network on concat(<paramref name="input"/>, condition) at timesteps <paramref name="t"/> with the
    /// batch's labels, guided when <see cref="Guided"/>.</summary>
    public Tensor Forward(Tensor input, Tensor t) => Forward(input, t, selfCondition: null);

    /// <summary>
    /// Runs the network on x_t <paramref name="input"/>, the self-condition <paramref name="selfCondition"/> (x0_hat of a
    /// self-conditioned model; null: none) and the batch's condition at timesteps <paramref name="t"/> with the batch's labels,
    /// guided when <see cref="Guided"/> (both branches see the same x0_hat). A network that takes concatenated channels gets
    /// concat(x_t, x0_hat, condition) (<see cref="SelfConditioning.Input"/>, then <see cref="AppendChannels"/>); one that
    /// takes separate inputs gets them apart.
    /// </summary>
    public Tensor Forward(Tensor input, Tensor t, Tensor? selfCondition)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(t);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_separate is not null) return ForwardSeparate(input, t, selfCondition);
        if (_labels is null && _channels is null && selfCondition is null) return _network!(input, t, null);
        using var scope = NewDisposeScope();
        var x = AppendChannels(selfCondition is null ? input : cat(new[] { input, selfCondition }, 1), _channels);
        if (!Guided)
        {
            // w = 1: the conditional model alone; w = 0: the unconditional one (the null label).
            var labels = _labels is null ? null : _guidanceScale == 0f ? _nullLabels : _labels;
            return _network!(x, t, labels).MoveToOuterDisposeScope();
        }
        long b = input.shape[0];
        // Both branches in one forward pass of 2B images: conditional first, then the null label.
        var both = _network!(cat(new[] { x, x }, 0), cat(new[] { t, t }, 0), cat(new[] { _labels!, _nullLabels! }, 0));
        return Guide(both.narrow(0, 0, b), both.narrow(0, b, b), _guidanceScale, _predictionChannels).MoveToOuterDisposeScope();
    }

    /// <summary><see cref="Forward(Tensor, Tensor, Tensor?)"/> for a network with separate inputs: the condition is handed over as
    /// it is (repeated once per batch, not per step, for a guided 2B call).</summary>
    private Tensor ForwardSeparate(Tensor input, Tensor t, Tensor? selfCondition)
    {
        if (!Guided)
        {
            var labels = _labels is null ? null : _guidanceScale == 0f ? _nullLabels : _labels;
            return _separate!(input, t, labels, selfCondition, _channels);
        }
        if (_channels is not null && _channelsTwice is null)
        {
            using (var scope = NewDisposeScope())
                _channelsTwice = cat(new[] { _channels, _channels }, 0).MoveToOuterDisposeScope();
            _channelsTwice.DetachFromDisposeScope();
        }
        using (var scope = NewDisposeScope())
        {
            long b = input.shape[0];
            var both = _separate!(cat(new[] { input, input }, 0), cat(new[] { t, t }, 0), cat(new[] { _labels!, _nullLabels! }, 0),
                selfCondition is null ? null : cat(new[] { selfCondition, selfCondition }, 0), _channelsTwice);
            return Guide(both.narrow(0, 0, b), both.narrow(0, b, b), _guidanceScale, _predictionChannels).MoveToOuterDisposeScope();
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _disposed = true;
        _channels?.Dispose();
        _channelsTwice?.Dispose();
        _labels?.Dispose();
        _nullLabels?.Dispose();
        _channels = _channelsTwice = _labels = _nullLabels = null;
    }
}
