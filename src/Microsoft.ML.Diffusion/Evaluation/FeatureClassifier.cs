using Microsoft.ML.Diffusion.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Evaluation;

/// <summary>
/// A small CNN classifier for 1x28x28 images in [-1, 1] (Fashion-MNIST), whose 128-d penultimate activations serve as
/// the feature space of a FID-like distance when the Inception network is not available:
/// conv 3x3 (32) - ReLU - max-pool 2 - conv 3x3 (64) - ReLU - max-pool 2 - Linear (3136 -> 128) - ReLU [features] - Linear (128 -> 10).
/// </summary>
public sealed class FeatureClassifier : nn.Module<Tensor, Tensor>
{
    /// <summary>Size of the feature vector returned by <see cref="Features"/>.</summary>
    public const int FeatureSize = 128;

    /// <summary>Number of classes.</summary>
    public const int ClassCount = 10;

    private readonly PaddedConv2d conv1;   // 1 input channel: padded (see PaddedConv2d's remarks on oneDNN)
    private readonly Conv2d conv2;
    private readonly Linear fc1;
    private readonly Linear fc2;

    /// <summary>Creates the network with PyTorch's default initialisation.</summary>
    public FeatureClassifier(string name = "feature_classifier") : base(name)
    {
        conv1 = new PaddedConv2d(1, 32, 3);
        conv2 = nn.Conv2d(32, 64, kernel_size: 3, padding: 1);
        fc1 = nn.Linear(64 * 7 * 7, FeatureSize);
        fc2 = nn.Linear(FeatureSize, ClassCount);
        RegisterComponents();
    }

    /// <summary>The 128-d penultimate features (after the ReLU) of images [B, 1, 28, 28] in [-1, 1].</summary>
    public Tensor Features(Tensor x)
    {
        if (x.dim() != 4 || x.shape[1] != 1 || x.shape[2] != 28 || x.shape[3] != 28)
            throw new ArgumentException($"Expected images [B, 1, 28, 28]; got [{string.Join(", ", x.shape)}].", nameof(x));
        using var scope = NewDisposeScope();
        var h = nn.functional.max_pool2d(nn.functional.relu(conv1.call(x)), 2);
        h = nn.functional.max_pool2d(nn.functional.relu(conv2.call(h)), 2);
        h = nn.functional.relu(fc1.call(h.flatten(1)));
        return h.MoveToOuterDisposeScope();
    }

    /// <summary>Class logits [B, 10].</summary>
    public override Tensor forward(Tensor x)
    {
        using var features = Features(x);
        return fc2.call(features);
    }

    /// <summary>Frees the layers' native memory.</summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            conv1.Dispose();
            conv2.Dispose();
            fc1.Dispose();
            fc2.Dispose();
        }
        base.Dispose(disposing);
    }
}
