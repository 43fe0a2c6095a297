using Microsoft.ML.Diffusion.Tests.Latent;
using Microsoft.ML.Diffusion.Tests.Reliability;
using Microsoft.ML.Diffusion.Training;

namespace Microsoft.ML.Diffusion.Tests.Training;

/// <summary>
/// The trainer base shared by the three trainers: the batch stream, and what the autoencoder and noisy-classifier trainers get
/// from it (checkpoints and resuming to the same weights as one run, a checkpoint before cancelling, refusal of another run's
/// checkpoint, the last good checkpoint named when a loss diverges, the learning rate in progress reports).
/// </summary>
[TestClass]
public class TrainerBaseTests
{
    private static IDataView Squares16(MLContext ml) => ml.Data.LoadFromEnumerable(LatentTestData.Squares16(24));

    private static byte[] Weights(MLContext ml, ITransformer model, string entry) =>
        ReliabilityKit.Entries(ReliabilityKit.SaveToBytes(ml, model, null)).Single(e => e.Key.EndsWith(entry, StringComparison.Ordinal)).Value;

    private static byte[] AutoencoderWeights(MLContext ml, AutoencoderModel model) => Weights(ml, model, "AutoencoderWeights.bin");

    [TestMethod]
    public void BatchesHoldBatchSizeRowsInOrderAndTheLastOneTheRest()
    {
        var rows = Enumerable.Range(0, 10).Select(i => (new[] { (float)i, -i }, (long)(100 + i)));
        var seen = new List<(long Label, long Index)>();
        var batches = new List<(float[] Pixels, long[] Labels)>();
        foreach (var b in BatchStream.Batches(rows, batchSize: 4, per: 2, withLabels: true, (label, index) => seen.Add((label, index))))
            batches.Add((b.Pixels[..(b.Count * 2)], b.Labels![..b.Count]));
        CollectionAssert.AreEqual(new[] { 4, 4, 2 }, batches.Select(b => b.Labels.Length).ToArray());
        CollectionAssert.AreEqual(new float[] { 8, -8, 9, -9 }, batches[2].Pixels);
        CollectionAssert.AreEqual(new long[] { 104, 105, 106, 107 }, batches[1].Labels);
        CollectionAssert.AreEqual(Enumerable.Range(0, 10).Select(i => (100L + i, (long)i)).ToList(), seen, "each row is checked with its index");

        var unlabelled = BatchStream.Batches(rows, batchSize: 5, per: 2, withLabels: false).First();
        Assert.IsNull(unlabelled.Labels);
        using var images = unlabelled.Images(channels: 2, size: 1);
        CollectionAssert.AreEqual(new long[] { 5, 2, 1, 1 }, images.shape);
        Assert.IsNull(unlabelled.LabelTensor());
    }

    [TestMethod]
    public void AutoencoderResumedFromItsCheckpointTrainsTheWeightsOfOneRun()
    {
        using var threads = ReliabilityKit.OneTorchThread();
        string dir = TestData.TempDirectory("ae-checkpoint");
        try
        {
            var ml = new MLContext(seed: 1);
            var data = Squares16(ml);   // 24 rows, batch 8: 3 steps per epoch
            var reports = new List<TrainingProgress>();
            var once = LatentTestData.TinyAutoencoder(steps: 5);
            once.Progress = new Inline<TrainingProgress>(reports.Add);
            using var straight = ml.Generative.Autoencoder(once).Fit(data);
            Assert.IsTrue(reports.All(p => p.LearningRate == (double)once.LearningRate), "progress reports the learning rate");

            var first = LatentTestData.TinyAutoencoder(steps: 4);   // a checkpoint at the end of epoch 1 (step 3) and at MaxSteps (step 4)
            first.CheckpointDirectory = dir;
            using (var part = ml.Generative.Autoencoder(first).Fit(data))
                Assert.AreEqual(4L, part.Config.TrainedSteps);
            Assert.IsTrue(File.Exists(TrainingCheckpoint.PathIn(dir)));

            var second = LatentTestData.TinyAutoencoder(steps: 5);
            second.CheckpointDirectory = dir;
            var resumedSteps = new List<long>();
            second.Progress = new Inline<TrainingProgress>(p => resumedSteps.Add(p.Step));
            using var resumed = ml.Generative.Autoencoder(second).Fit(data);
            CollectionAssert.AreEqual(new long[] { 5 }, resumedSteps, "the resumed run takes the one step left");
            Assert.AreEqual(5L, resumed.Config.TrainedSteps);
            CollectionAssert.AreEqual(AutoencoderWeights(ml, straight), AutoencoderWeights(ml, resumed), "4 steps + 1 resumed differ from 5 steps in one run");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void NoisyClassifierCancelledWritesACheckpointAndResumesToTheWeightsOfOneRun()
    {
        using var threads = ReliabilityKit.OneTorchThread();
        string dir = TestData.TempDirectory("ncls-checkpoint");
        try
        {
            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(TestData.Squares(24).ToList());
            using var diffusion = ml.Generative.Diffusion(TestData.TinyOptions(steps: 1)).Fit(data);
            NoisyClassifierTrainer.Options Options(long steps) => new()
            {
                DiffusionModel = diffusion, ImageColumnName = "Image", LabelColumnName = "Label", NumClasses = 25, BaseChannels = 8,
                GroupNormGroups = 4, BatchSize = 8, Epochs = 100, MaxSteps = steps, LearningRate = 3e-3f, Seed = 5,
                CheckpointInterval = 100,
            };
            using var straight = ml.Generative.NoisyClassifier(Options(5)).Fit(data);

            using var cts = new CancellationTokenSource();
            var cancelled = Options(5);
            cancelled.CheckpointDirectory = dir;
            cancelled.CancellationToken = cts.Token;
            cancelled.Progress = new Inline<TrainingProgress>(p => { if (p.Step == 2) cts.Cancel(); });
            Assert.ThrowsExactly<OperationCanceledException>(() => ml.Generative.NoisyClassifier(cancelled).Fit(data));
            Assert.IsTrue(File.Exists(TrainingCheckpoint.PathIn(dir)), "cancelling writes a checkpoint first");

            var resumed = Options(5);
            resumed.CheckpointDirectory = dir;
            var steps = new List<long>();
            resumed.Progress = new Inline<TrainingProgress>(p => steps.Add(p.Step));
            using var model = ml.Generative.NoisyClassifier(resumed).Fit(data);
            CollectionAssert.AreEqual(new long[] { 3, 4, 5 }, steps);
            CollectionAssert.AreEqual(Weights(ml, straight, "NoisyClassifierWeights.bin"), Weights(ml, model, "NoisyClassifierWeights.bin"),
                "2 steps, cancel, 3 resumed steps differ from 5 steps in one run");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void ACheckpointOfOtherOptionsOrAnotherTrainerIsRefused()
    {
        string dir = TestData.TempDirectory("ae-identity");
        try
        {
            var ml = new MLContext(seed: 1);
            var data = Squares16(ml);
            var first = LatentTestData.TinyAutoencoder(steps: 1);
            first.CheckpointDirectory = dir;
            ml.Generative.Autoencoder(first).Fit(data).Dispose();

            var other = LatentTestData.TinyAutoencoder(steps: 2);
            other.CheckpointDirectory = dir;
            other.KlWeight = 1e-3;
            var e = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Generative.Autoencoder(other).Fit(data));
            StringAssert.Contains(e.Message, "written with other training options");
            StringAssert.Contains(e.Message, "KlWeight");

            var diffusion = TestData.TinyOptions(steps: 2);
            diffusion.ImageSize = 16;
            diffusion.AttentionResolutions = Array.Empty<int>();
            diffusion.CheckpointDirectory = dir;
            e = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Generative.Diffusion(diffusion).Fit(data));
            StringAssert.Contains(e.Message, "written with other training options");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void AutoencoderDivergingNamesTheLastGoodCheckpoint()
    {
        using var threads = ReliabilityKit.OneTorchThread();
        string dir = TestData.TempDirectory("ae-nan");
        try
        {
            var ml = new MLContext(seed: 1);
            var options = LatentTestData.TinyAutoencoder(steps: 20);
            options.LearningRate = 1e30f;   // finite, but the first Adam step takes the weights to about 1e30: a later loss overflows
            options.CheckpointDirectory = dir;
            options.CheckpointInterval = 1;
            var e = Assert.ThrowsExactly<NonFiniteLossException>(() => ml.Generative.Autoencoder(options).Fit(Squares16(ml)));
            Assert.IsTrue(e.StepNumber > 1, $"step {e.StepNumber}");
            StringAssert.Contains(e.Message, $"The last good checkpoint (step {e.StepNumber - 1}) is kept in '{TrainingCheckpoint.PathIn(dir)}'");
            Assert.AreEqual(TrainingCheckpoint.PathIn(dir), e.CheckpointPath);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void TooFewRowsNameTheColumnAndBatchSizeForEveryTrainer()
    {
        var ml = new MLContext(seed: 1);
        var empty = ml.Data.LoadFromEnumerable(LatentTestData.Squares16(0));
        var ae = LatentTestData.TinyAutoencoder(steps: 1);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Generative.Autoencoder(ae).Fit(empty));
        Assert.AreEqual("Column 'Image': the input has no rows; expected at least BatchSize = 8 images.", e.Message);
        e = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Generative.Autoencoder(ae).Fit(ml.Data.LoadFromEnumerable(LatentTestData.Squares16(5))));
        Assert.AreEqual("Column 'Image': the input has 5 rows, fewer than BatchSize = 8; lower BatchSize or add images.", e.Message);
    }

    private sealed class Inline<T>(Action<T> handler) : IProgress<T>
    {
        public void Report(T value) => handler(value);
    }
}
