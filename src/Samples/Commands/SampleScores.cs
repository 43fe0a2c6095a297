using Microsoft.ML.Diffusion.Evaluation;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Samples.Commands;

/// <summary>
/// The figures of the evaluate commands, computed one way for all of them (<c>evaluate</c>, <c>evaluate-guidance</c> and
/// <c>train --eval-every</c>): the FID-like Frechet distance and KID of generated images against test images in the
/// feature space of the project's <see cref="FeatureClassifier"/>, and the classifier's accuracy on images generated per class.
/// </summary>
public sealed class SampleScores : IDisposable
{
    private readonly FeatureClassifier _net;
    private readonly Tensor _realFeatures;

    /// <summary>Computes the features of the real images once (the first <paramref name="count"/> of <paramref name="testImages"/>).</summary>
    /// <param name="net">The feature classifier, in eval mode (not owned).</param>
    /// <param name="testImages">Test images [N, 1, 28, 28] in [-1, 1].</param>
    /// <param name="count">How many of them generated sets are compared with.</param>
    public SampleScores(FeatureClassifier net, Tensor testImages, int count)
    {
        if (count > testImages.shape[0]) throw new ArgumentOutOfRangeException(nameof(count), count, $"There are only {testImages.shape[0]} test images.");
        _net = net;
        using var real = testImages.narrow(0, 0, count);
        _realFeatures = Features(net, real);
    }

    /// <summary>The number of test images compared with.</summary>
    public long Count => _realFeatures.shape[0];

    /// <summary>The seeds of an evaluation set: image i uses <paramref name="seed"/> + i (as <c>evaluate --seed</c>).</summary>
    public static uint[] Seeds(uint seed, int count) => Enumerable.Range(0, count).Select(i => unchecked(seed + (uint)i)).ToArray();

    /// <summary>Frechet distance and KID of <paramref name="generated"/> [N, 1, 28, 28] (clamped to [-1, 1] first) against the
    /// test images (<see cref="FeatureStatistics"/>).</summary>
    public (double FrechetDistance, double Kid) Distances(Tensor generated)
    {
        using var fake = generated.clamp(-1, 1);
        using var fakeFeatures = Features(_net, fake);
        return (FeatureStatistics.FrechetDistance(_realFeatures, fakeFeatures),
                FeatureStatistics.KernelInceptionDistance(_realFeatures, fakeFeatures));
    }

    /// <summary>The 128-d features of <paramref name="images"/>, in batches of <paramref name="batchSize"/>.</summary>
    public static Tensor Features(FeatureClassifier net, Tensor images, int batchSize = 500)
    {
        using var noGrad = no_grad();
        var parts = new List<Tensor>();
        for (long i = 0; i < images.shape[0]; i += batchSize)
            parts.Add(net.Features(images.narrow(0, i, Math.Min(batchSize, images.shape[0] - i))));
        var all = cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return all;
    }

    /// <summary>The requests of a per-class set: <paramref name="perClass"/> images of each class, seeds
    /// <paramref name="seed"/> .. seed + perClass - 1 for every class; labels 0, 0, ..., 1, 1, ...</summary>
    public static (uint[] Seeds, int[] Labels) PerClassRequests(int classes, int perClass, uint seed) =>
        (Enumerable.Range(0, classes * perClass).Select(i => unchecked(seed + (uint)(i % perClass))).ToArray(),
         Enumerable.Range(0, classes * perClass).Select(i => i / perClass).ToArray());

    /// <summary>The classifier's accuracy on each class of a set made by <see cref="PerClassRequests"/>.</summary>
    public static double[] PerClassAccuracy(FeatureClassifier net, Tensor images, int classes, int perClass)
    {
        using var predicted = Predict(net, images);
        var p = predicted.data<long>().ToArray();
        return Enumerable.Range(0, classes)
            .Select(c => Enumerable.Range(c * perClass, perClass).Count(i => p[i] == c) / (double)perClass).ToArray();
    }

    /// <summary>The classifier's predicted class of each image [N, 1, 28, 28] in [-1, 1] (clamped first).</summary>
    private static Tensor Predict(FeatureClassifier net, Tensor images)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var parts = new List<Tensor>();
        for (long i = 0; i < images.shape[0]; i += 500)
            parts.Add(net.forward(images.narrow(0, i, Math.Min(500, images.shape[0] - i)).clamp(-1, 1)).argmax(1));
        return cat(parts, 0).MoveToOuterDisposeScope();
    }

    /// <summary>Frees the test features.</summary>
    public void Dispose() => _realFeatures.Dispose();
}
