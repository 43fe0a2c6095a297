using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Conditions;

/// <summary>
/// The network call of one batch with its extra conditioning inputs: image channels concatenated after the network's
/// own input (x_t, and x0_hat when self-conditioned), as SR3 / guided-diffusion's SuperResModel do. One per sampling
/// batch; it owns a copy of the condition on the network's device. Used as the innermost denoiser, so the
/// self-conditioning wrapper (<see cref="Training.SelfConditionedDenoiser"/>) composes with it.
/// </summary>
public sealed class ConditionedNetwork : IDisposable
{
    private readonly Func<Tensor, Tensor, Tensor> _network;
    private Tensor? _channels;

    /// <summary>Creates the call. <paramref name="channels"/> [B, Cc, S, S] (any device; copied to <paramref name="device"/>)
    /// is appended to every input; null means no image condition.</summary>
    public ConditionedNetwork(Func<Tensor, Tensor, Tensor> network, Tensor? channels, Device device)
    {
        ArgumentNullException.ThrowIfNull(network);
        _network = network;
        if (channels is not null)
        {
            using var scope = NewDisposeScope();
            var copy = channels.detach().to_type(float32).to(device).clone();
            _channels = copy.MoveToOuterDisposeScope();
            _channels.DetachFromDisposeScope();
        }
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

    /// <summary>Runs the network on concat(<paramref name="input"/>, condition) at timesteps <paramref name="t"/>.</summary>
    public Tensor Forward(Tensor input, Tensor t)
    {
        ArgumentNullException.ThrowIfNull(input);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_channels is null) return _network(input, t);
        using var scope = NewDisposeScope();
        return _network(AppendChannels(input, _channels), t).MoveToOuterDisposeScope();
    }

    private bool _disposed;

    /// <inheritdoc/>
    public void Dispose()
    {
        _disposed = true;
        _channels?.Dispose();
        _channels = null;
    }
}
