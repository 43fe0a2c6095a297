using Microsoft.ML.Diffusion.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Training;

/// <summary>
/// One optimizer step of the KL autoencoder on a batch (<see cref="AutoencoderLoss"/>), with Adam. The reparameterisation noise
/// comes from the loop's seeded CPU generator, so runs are reproducible and resumable; the retry of non-finite steps and the
/// checkpoint state are <see cref="TrainingLoop"/>'s. Knows TorchSharp only.
/// </summary>
internal sealed class AutoencoderTrainingLoop : TrainingLoop
{
    private readonly double _klWeight;

    /// <summary>Creates the loop; <paramref name="model"/> must already be on <paramref name="device"/>.</summary>
    public AutoencoderTrainingLoop(KlAutoencoder model, double learningRate, double klWeight, long seed, Device device)
        : this(model, new LearningRatePlan(learningRate), klWeight, seed, device)
    {
    }

    /// <summary>Creates the loop with a learning-rate curve; <paramref name="model"/> must already be on <paramref name="device"/>.</summary>
    public AutoencoderTrainingLoop(KlAutoencoder model, LearningRatePlan learningRate, double klWeight, long seed, Device device)
        : base(model, seed, device, parameters => ScalarSafeOptimizers.Adam(parameters, learningRate.Peak), learningRate)
    {
        Model = model;
        _klWeight = klWeight;
    }

    /// <summary>The network being trained.</summary>
    public KlAutoencoder Model { get; }

    /// <summary>The mean absolute reconstruction error per element of the last step's batch (through the sampled z).</summary>
    public float LastL1 { get; private set; } = float.NaN;

    /// <summary>One step on <paramref name="x"/> [B, C, S, S] in [-1, 1]; returns the loss (L1 sum per image + beta KL).</summary>
    public float TrainStep(Tensor x)
    {
        Model.train();
        using var scope = NewDisposeScope();
        var input = x.device == Device ? x : x.to(Device);
        long latentSize = Model.Config.LatentSize;
        var eps = randn(new long[] { input.shape[0], Model.Config.LatentChannels, latentSize, latentSize },
            dtype: float32, device: CPU, generator: Generator).to(Device);
        Tensor reconstruction = null!;
        return OptimizerStep(() =>
            {
                var (mean, logVar) = Model.Encode(input);
                var z = AutoencoderLoss.Sample(mean, logVar, eps);
                reconstruction = Model.Decode(z);
                return AutoencoderLoss.Total(input, reconstruction, mean, logVar, _klWeight);
            },
            succeeded: () => LastL1 = (input - reconstruction).abs().mean().item<float>());
    }
}
