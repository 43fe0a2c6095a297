using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Training;
using Microsoft.ML.Transforms.Image;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Latent;

/// <summary>mlContext.Generative.Autoencoder: latent shapes, the loss against hand-computed values, reconstruction improving with
/// training, save/load, bad input.</summary>
[TestClass]
public class AutoencoderTests
{
    private static MLContext _ml = null!;
    private static IDataView _data = null!;
    private static AutoencoderModel _trained = null!;

    [ClassInitialize]
    public static void Fit(TestContext _)
    {
        _ml = new MLContext(seed: 1);
        _data = _ml.Data.LoadFromEnumerable(LatentTestData.Squares16(32));
        _trained = _ml.Generative.Autoencoder(LatentTestData.TinyAutoencoder(steps: 60)).Fit(_data);
    }

    [ClassCleanup]
    public static void Cleanup() => _trained.Dispose();

    private static Tensor Images(int n) =>
        ImageTensorConverter.ToTensor(LatentTestData.Squares16(n, seed: 9).Select(r => r.Image).ToList(), 1);

    [TestMethod]
    public void LatentHasLatentChannelsAndSideOverFactor()
    {
        using var x = Images(3);
        using var z = _trained.Encode(x);
        CollectionAssert.AreEqual(new long[] { 3, 4, 4, 4 }, z.shape);
        using var back = _trained.Decode(z);
        CollectionAssert.AreEqual(new long[] { 3, 1, 16, 16 }, back.shape);
        Assert.AreEqual(4, _trained.LatentSize);

        using var f8 = _ml.Generative.Autoencoder(LatentTestData.TinyAutoencoder(steps: 1, factor: 8)).Fit(_data);
        using var z8 = f8.Encode(x);
        CollectionAssert.AreEqual(new long[] { 3, 4, 2, 2 }, z8.shape);
        var (mean, logVar) = f8.EncodeDistribution(x);
        using (mean) using (logVar)
        {
            CollectionAssert.AreEqual(z8.shape, logVar.shape);
            Assert.IsTrue(mean.allclose(z8, rtol: 0, atol: 0), "Encode returns the posterior mean");
        }
    }

    [TestMethod]
    public void LossTermsMatchHandComputedValues()
    {
        // KL(N(mu, s^2) || N(0, 1)) = 0.5 (mu^2 + s^2 - 1 - ln s^2) per element, summed per image.
        using var mean = tensor(new float[] { 1f, 0f, -2f, 0.5f }, new long[] { 2, 1, 1, 2 });
        using var logVar = tensor(new float[] { 0f, MathF.Log(4f), MathF.Log(0.25f), 0f }, new long[] { 2, 1, 1, 2 });
        using var kl = AutoencoderLoss.KlDivergence(mean, logVar);
        double k0 = 0.5 * (1 + 1 - 1 - 0) + 0.5 * (0 + 4 - 1 - Math.Log(4));
        double k1 = 0.5 * (4 + 0.25 - 1 - Math.Log(0.25)) + 0.5 * (0.25 + 1 - 1 - 0);
        Assert.AreEqual(k0, kl[0].item<float>(), 1e-5);
        Assert.AreEqual(k1, kl[1].item<float>(), 1e-5);

        using var x = tensor(new float[] { 0f, 1f, -1f, 0.5f }, new long[] { 2, 1, 1, 2 });
        using var r = tensor(new float[] { 0.5f, 1f, 1f, 0f }, new long[] { 2, 1, 1, 2 });
        using var total = AutoencoderLoss.Total(x, r, mean, logVar, 0.1);
        double l1 = ((0.5 + 0) + (2 + 0.5)) / 2;
        Assert.AreEqual(l1 + 0.1 * (k0 + k1) / 2, total.item<float>(), 1e-5);

        using var eps = tensor(new float[] { 1f, -1f, 2f, 0f }, new long[] { 2, 1, 1, 2 });
        using var z = AutoencoderLoss.Sample(mean, logVar, eps);
        CollectionAssert.AreEqual(new[] { 2f, -2f, -1f, 0.5f }, z.data<float>().ToArray());
    }

    [TestMethod]
    public void ReconstructionErrorFallsWithTraining()
    {
        using var x = Images(16);
        using var untrained = _ml.Generative.Autoencoder(LatentTestData.TinyAutoencoder(steps: 1)).Fit(_data);
        using var before = untrained.Reconstruct(x);
        using var after = _trained.Reconstruct(x);
        double errBefore = (before - x).abs().mean().item<float>();
        double errAfter = (after - x).abs().mean().item<float>();
        Assert.IsTrue(errAfter < 0.6 * errBefore, $"mean |x - D(E(x))| should fall with training: 1 step {errBefore:G4}, 60 steps {errAfter:G4}");
        Assert.AreEqual(60, _trained.Config.TrainedSteps);
    }

    [TestMethod]
    public void ProgressAndCancellation()
    {
        var reports = new List<TrainingProgress>();
        var o = LatentTestData.TinyAutoencoder(steps: 3);
        o.Progress = new SyncProgress<TrainingProgress>(reports.Add);
        using (_ml.Generative.Autoencoder(o).Fit(_data)) { }
        CollectionAssert.AreEqual(new long[] { 1, 2, 3 }, reports.Select(p => p.Step).ToArray());
        Assert.IsTrue(reports.All(p => float.IsFinite(p.Loss) && p.Loss > 0));

        using var cts = new CancellationTokenSource();
        cts.Cancel();
        var cancelled = LatentTestData.TinyAutoencoder(steps: 3);
        cancelled.CancellationToken = cts.Token;
        Assert.ThrowsExactly<OperationCanceledException>(() => _ml.Generative.Autoencoder(cancelled).Fit(_data));
    }

    [TestMethod]
    public void SaveLoadGivesIdenticalEncodeDecodeAndTransform()
    {
        string path = Path.Combine(Path.GetTempPath(), $"ae-{Guid.NewGuid():N}.zip");
        try
        {
            _ml.Model.Save(_trained, _data.Schema, path);
            using var loaded = (AutoencoderModel)_ml.Model.Load(path, out _);
            Assert.AreEqual(_trained.Config.ToJson(), loaded.Config.ToJson());
            using var x = Images(5);
            using var z1 = _trained.Encode(x);
            using var z2 = loaded.Encode(x);
            Assert.IsTrue(z1.allclose(z2, rtol: 0, atol: 0), "Encode differs after save/load");
            using var d1 = _trained.Decode(z1);
            using var d2 = loaded.Decode(z1);
            Assert.IsTrue(d1.allclose(d2, rtol: 0, atol: 0), "Decode differs after save/load");

            var a = _trained.Transform(_data).GetColumn<MLImage>("Reconstruction").Take(4).Select(TestData.Pixels).ToList();
            var b = loaded.Transform(_data).GetColumn<MLImage>("Reconstruction").Take(4).Select(TestData.Pixels).ToList();
            Assert.AreEqual(new ImageDataViewType(16, 16), loaded.Transform(_data).Schema["Reconstruction"].Type);
            for (int i = 0; i < 4; i++) CollectionAssert.AreEqual(a[i], b[i]);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void BadInputIsRejectedWithClearErrors()
    {
        var notDivisible = LatentTestData.TinyAutoencoder(1);
        notDivisible.ImageSize = 18;
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Autoencoder(notDivisible));
        StringAssert.Contains(e.Message, "ImageSize must be divisible by the DownsamplingFactor 4");

        var channels = LatentTestData.TinyAutoencoder(1);
        channels.Channels = 2;
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Autoencoder(channels)).Message, "Channels");

        var factor = LatentTestData.TinyAutoencoder(1);
        factor.DownsamplingFactor = 3;
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Autoencoder(factor)).Message, "DownsamplingFactor");

        var wrongSize = LatentTestData.TinyAutoencoder(1);
        wrongSize.ImageSize = 32;
        var e2 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Autoencoder(wrongSize).Fit(_data));
        StringAssert.Contains(e2.Message, "'Image'");

        using var badImages = zeros(2, 3, 16, 16);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => _trained.Encode(badImages)).Message, "[N, 1, 16, 16]");
        using var badLatents = zeros(2, 4, 8, 8);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => _trained.Decode(badLatents)).Message, "[N, 4, 4, 4]");
        var small = _ml.Data.LoadFromEnumerable(TestData.Squares(4).ToList());
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _trained.Transform(small)).Message, "16x16");
    }

    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
