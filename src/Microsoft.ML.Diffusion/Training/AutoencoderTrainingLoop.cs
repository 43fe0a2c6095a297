using Microsoft.ML.Diffusion.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Training;

/// <summary>
/// One optimizer step of the KL autoencoder on a batch (<see cref="AutoencoderLoss"/>), with Adam. The reparameterisation noise
/// comes from a CPU generator seeded with the given seed, so runs are reproducible. A step whose loss or gradients are not
/// finite is recomputed (the CPU kernels of some machines return NaN at random, see TorchRuntime); a failure that persists
/// throws <see cref="NonFiniteLossException"/> and leaves the weights untouched. Knows TorchSharp only.
/// </summary>
internal sealed class AutoencoderTrainingLoop : IDisposable
{
    private const int MaxAttempts = 3;
    private readonly Device _device;
    private readonly Generator _generator;
    private readonly OptimizerHelper _optimizer;
    private readonly Parameter[] _parameters;
    private readonly double _klWeight;

    /// <summary>Creates the loop; <paramref name="model"/> must already be on <paramref name="device"/>.</summary>
    public AutoencoderTrainingLoop(KlAutoencoder model, double learningRate, double klWeight, long seed, Device device)
    {
        Model = model;
        _device = device;
        _klWeight = klWeight;
        _generator = new Generator((ulong)seed, CPU);
        _parameters = model.parameters().ToArray();
        _optimizer = ScalarSafeOptimizers.Adam(_parameters, learningRate);
    }

    /// <summary>The network being trained.</summary>
    public KlAutoencoder Model { get; }

    /// <summary>Optimizer steps taken.</summary>
    public long Step { get; private set; }

    /// <summary>The mean absolute reconstruction error per element of the last step's batch (through the sampled z).</summary>
    public float LastL1 { get; private set; } = float.NaN;

    /// <summary>The loss of the last successful step (NaN before the first).</summary>
    public float LastFiniteLoss { get; private set; } = float.NaN;

    /// <summary>One step on <paramref name="x"/> [B, C, S, S] in [-1, 1]; returns the loss (L1 sum per image + beta KL).</summary>
    public float TrainStep(Tensor x)
    {
        Model.train();
        float lossValue = float.NaN;
        using (var scope = NewDisposeScope())
        {
            var input = x.device == _device ? x : x.to(_device);
            long latentSize = Model.Config.LatentSize;
            var eps = randn(new long[] { input.shape[0], Model.Config.LatentChannels, latentSize, latentSize },
                dtype: float32, device: CPU, generator: _generator).to(_device);
            for (int attempt = 1; ; attempt++)
            {
                using var attemptScope = NewDisposeScope();
                var (mean, logVar) = Model.Encode(input);
                var z = AutoencoderLoss.Sample(mean, logVar, eps);
                var reconstruction = Model.Decode(z);
                var loss = AutoencoderLoss.Total(input, reconstruction, mean, logVar, _klWeight);
                lossValue = loss.item<float>();
                _optimizer.zero_grad();
                if (float.IsFinite(lossValue))
                {
                    loss.backward();
                    double norm = nn.utils.clip_grad_norm_(_parameters, double.PositiveInfinity);
                    if (double.IsFinite(norm))
                    {
                        LastL1 = (input - reconstruction).abs().mean().item<float>();
                        break;
                    }
                }
                if (attempt == MaxAttempts)
                {
                    _optimizer.zero_grad();
                    throw NonFiniteLossException.AfterRetries(Step + 1, lossValue, LastFiniteLoss, MaxAttempts);
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
