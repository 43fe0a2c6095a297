namespace Microsoft.ML.Diffusion.Tests.Training;

/// <summary>
/// <see cref="DiffusionTrainer.Options.EpochCompleted"/>: called once per completed epoch with the step, the epoch's mean loss
/// and a model of the current EMA weights; resumed runs call it for their remaining epochs only; taking a snapshot changes
/// nothing in training. 16 images in batches of 8: 2 steps per epoch.
/// </summary>
[TestClass]
public sealed class EpochCompletedTests
{
    private static IDataView Data(MLContext ml) => ml.Data.LoadFromEnumerable(TestData.Squares(16).ToList());

    private static DiffusionTrainer.Options Options(int epochs)
    {
        var o = TestData.TinyOptions();
        o.MaxSteps = null;
        o.Epochs = epochs;
        return o;
    }

    private static byte[][] Sample(DiffusionModel m) =>
        m.Generate(3, new SamplerOptions { Steps = 4, Seed = 11 }).Select(TestData.Pixels).ToArray();

    [TestMethod]
    public void CalledOncePerEpochWithTheStepAndTheEpochsMeanLoss()
    {
        var ml = new MLContext(seed: 1);
        var progress = new List<TrainingProgress>();
        var snapshots = new List<(int Epoch, int Epochs, long Step, float MeanLoss)>();
        var o = Options(epochs: 3);
        o.Progress = new Inline<TrainingProgress>(progress.Add);
        o.EpochCompleted = s => snapshots.Add((s.Epoch, s.Epochs, s.Step, s.MeanLoss));
        ml.Generative.Diffusion(o).Fit(Data(ml)).Dispose();

        CollectionAssert.AreEqual(new[] { 1, 2, 3 }, snapshots.Select(s => s.Epoch).ToArray());
        CollectionAssert.AreEqual(new long[] { 2, 4, 6 }, snapshots.Select(s => s.Step).ToArray());
        Assert.IsTrue(snapshots.All(s => s.Epochs == 3));
        foreach (var s in snapshots)
        {
            var losses = progress.Where(p => p.Epoch == s.Epoch).Select(p => (double)p.Loss).ToArray();
            Assert.HasCount(2, losses);
            Assert.AreEqual(losses.Average(), s.MeanLoss, 1e-6, $"mean loss of epoch {s.Epoch}");
        }
    }

    [TestMethod]
    public void TheLastEpochsModelGeneratesTheFinalModelsImagesAndOutlivesTraining()
    {
        var ml = new MLContext(seed: 1);
        var models = new List<DiffusionModel>();
        TrainingSnapshot? kept = null;
        var o = Options(epochs: 2);
        o.EpochCompleted = s =>
        {
            models.Add(s.CreateModel());
            kept = s;
        };
        byte[][] final;
        using (var model = ml.Generative.Diffusion(o).Fit(Data(ml)))
        {
            final = Sample(model);
            Assert.AreEqual(4L, model.Config.TrainedSteps);
        }
        try
        {
            Assert.HasCount(2, models);
            Assert.AreEqual(2L, models[0].Config.TrainedSteps);
            Assert.AreEqual(4L, models[1].Config.TrainedSteps);
            // Sampled after the final model (which holds the trainer's own EMA network) was disposed: an independent copy.
            var last = Sample(models[1]);
            for (int i = 0; i < final.Length; i++)
                CollectionAssert.AreEqual(final[i], last[i], $"image {i} of the last epoch's snapshot");
            var first = Sample(models[0]);
            Assert.IsFalse(first.Zip(final).All(p => p.First.SequenceEqual(p.Second)), "epoch 1's snapshot should hold epoch 1's weights");
            var e = Assert.ThrowsExactly<InvalidOperationException>(() => kept!.CreateModel());
            StringAssert.Contains(e.Message, "EpochCompleted");
        }
        finally
        {
            foreach (var m in models) m.Dispose();
        }
    }

    [TestMethod]
    public void AResumedRunCallsItForTheRemainingEpochsOnly()
    {
        string dir = TestData.TempDirectory("diffusion-epoch-hook");
        try
        {
            var ml = new MLContext(seed: 1);
            var epochs = new List<(int Epoch, long Step)>();
            var first = Options(epochs: 2);
            first.CheckpointDirectory = dir;
            first.EpochCompleted = s => epochs.Add((s.Epoch, s.Step));
            ml.Generative.Diffusion(first).Fit(Data(ml)).Dispose();
            CollectionAssert.AreEqual(new[] { (1, 2L), (2, 4L) }, epochs);

            epochs.Clear();
            var more = Options(epochs: 4);
            more.CheckpointDirectory = dir;
            more.EpochCompleted = s => epochs.Add((s.Epoch, s.Step));
            ml.Generative.Diffusion(more).Fit(Data(ml)).Dispose();
            CollectionAssert.AreEqual(new[] { (3, 6L), (4, 8L) }, epochs);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Building a snapshot's network draws initial weights from libtorch's global generator, which dropout uses too:
    /// with dropout on, a run that takes snapshots must still train exactly like one that does not.</summary>
    [TestMethod]
    public void TakingSnapshotsLeavesTrainingUnchanged()
    {
        byte[][] Train(bool snapshots)
        {
            var ml = new MLContext(seed: 1);
            var o = Options(epochs: 2);   // epoch 2's dropout masks follow epoch 1's snapshot
            o.Dropout = 0.3f;
            if (snapshots) o.EpochCompleted = s => s.CreateModel().Dispose();
            using var model = ml.Generative.Diffusion(o).Fit(Data(ml));
            return Sample(model);
        }
        var plain = Train(snapshots: false);
        var observed = Train(snapshots: true);
        for (int i = 0; i < plain.Length; i++)
            CollectionAssert.AreEqual(plain[i], observed[i], $"image {i}: taking snapshots changed training");
    }

    [TestMethod]
    public void CancellingInTheCallbackStopsBeforeTheNextEpoch()
    {
        string dir = TestData.TempDirectory("diffusion-epoch-cancel");
        try
        {
            var ml = new MLContext(seed: 1);
            using var cts = new CancellationTokenSource();
            var steps = new List<long>();
            var o = Options(epochs: 3);
            o.CheckpointDirectory = dir;
            o.CancellationToken = cts.Token;
            o.Progress = new Inline<TrainingProgress>(p => steps.Add(p.Step));
            o.EpochCompleted = s =>
            {
                Assert.AreEqual(cts.Token, s.CancellationToken);
                cts.Cancel();
            };
            Assert.Throws<OperationCanceledException>(() => ml.Generative.Diffusion(o).Fit(Data(ml)));
            CollectionAssert.AreEqual(new long[] { 1, 2 }, steps, "no step after the cancelling callback");

            // The epoch's checkpoint was written before the callback: the run resumes at epoch 2.
            var epochs = new List<int>();
            var resumed = Options(epochs: 3);
            resumed.CheckpointDirectory = dir;
            resumed.EpochCompleted = s => epochs.Add(s.Epoch);
            ml.Generative.Diffusion(resumed).Fit(Data(ml)).Dispose();
            CollectionAssert.AreEqual(new[] { 2, 3 }, epochs);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [TestMethod]
    public void ProgressReportsTheScheduledLearningRate()
    {
        var ml = new MLContext(seed: 1);
        var rates = new List<double>();
        var o = TestData.TinyOptions(steps: 5);
        o.LearningRate = 1e-3f;
        o.LearningRateWarmupSteps = 4;
        o.Progress = new Inline<TrainingProgress>(p => rates.Add(p.LearningRate));
        ml.Generative.Diffusion(o).Fit(Data(ml)).Dispose();
        // Warm-up: peak * (step + 1) / 4 for 0-based steps 0..3, then the peak.
        double peak = 1e-3f;
        var expected = new[] { peak / 4, peak / 2, peak * 3 / 4, peak, peak };
        Assert.HasCount(5, rates);
        for (int i = 0; i < 5; i++) Assert.AreEqual(expected[i], rates[i], 1e-12, $"step {i + 1}");
    }

    private sealed class Inline<T>(Action<T> handler) : IProgress<T>
    {
        public void Report(T value) => handler(value);
    }
}
