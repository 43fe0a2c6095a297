using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Training;

[TestClass]
public class TrainingTests
{
    private static IDataView Data(MLContext ml, int n = 24) => ml.Data.LoadFromEnumerable(TestData.Squares(n).ToList());

    private static byte[][] Sample(DiffusionModel m) =>
        m.Generate(2, new SamplerOptions { Steps = 4, Seed = 5 }).Select(TestData.Pixels).ToArray();

    [TestMethod]
    public void SameSeedAndDataGiveTheSameModel()
    {
        var a = new MLContext(seed: 1).Generative.Diffusion(TestData.TinyOptions(steps: 3)).Fit(Data(new MLContext()));
        var b = new MLContext(seed: 1).Generative.Diffusion(TestData.TinyOptions(steps: 3)).Fit(Data(new MLContext()));
        var sa = Sample(a);
        var sb = Sample(b);
        for (int i = 0; i < sa.Length; i++) CollectionAssert.AreEqual(sa[i], sb[i]);
        a.Dispose();
        b.Dispose();
    }

    [TestMethod]
    public void ResumingFromACheckpointEqualsAnUninterruptedRun()
    {
        string dir = Path.Combine(Path.GetTempPath(), "diffusion-ckpt-" + Guid.NewGuid().ToString("N"));
        try
        {
            var ml = new MLContext(seed: 1);
            var straight = TestData.TinyOptions(steps: 6);
            var full = ml.Generative.Diffusion(straight).Fit(Data(ml));

            var first = TestData.TinyOptions(steps: 4);
            first.CheckpointDirectory = dir;
            first.CheckpointInterval = 2;
            ml.Generative.Diffusion(first).Fit(Data(ml)).Dispose();
            Assert.IsTrue(File.Exists(Path.Combine(dir, TrainingCheckpoint.FileName)));
            Assert.IsFalse(File.Exists(Path.Combine(dir, TrainingCheckpoint.FileName + ".tmp")), "no temporary file is left behind");

            var second = TestData.TinyOptions(steps: 6);
            second.CheckpointDirectory = dir;
            second.CheckpointInterval = 2;
            var resumed = ml.Generative.Diffusion(second).Fit(Data(ml));
            Assert.AreEqual(6L, resumed.Config.TrainedSteps);

            var s1 = Sample(full);
            var s2 = Sample(resumed);
            for (int i = 0; i < s1.Length; i++)
                CollectionAssert.AreEqual(s1[i], s2[i], "resumed training diverged from the uninterrupted run");
            full.Dispose();
            resumed.Dispose();
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void ResumingWithOtherOptionsFailsClearly()
    {
        string dir = Path.Combine(Path.GetTempPath(), "diffusion-ckpt-" + Guid.NewGuid().ToString("N"));
        try
        {
            var ml = new MLContext(seed: 1);
            var first = TestData.TinyOptions(steps: 2);
            first.CheckpointDirectory = dir;
            ml.Generative.Diffusion(first).Fit(Data(ml)).Dispose();
            var other = TestData.TinyOptions(steps: 4);
            other.CheckpointDirectory = dir;
            other.BaseChannels = 16;
            var e = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Generative.Diffusion(other).Fit(Data(ml)));
            StringAssert.Contains(e.Message, "other training options");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void ProgressAndLogAreReported()
    {
        var ml = new MLContext(seed: 1);
        var messages = new List<string>();
        ml.Log += (_, e) => { lock (messages) messages.Add(e.Message); };
        var reports = new List<TrainingProgress>();
        var options = TestData.TinyOptions(steps: 3);
        options.LogInterval = 1;
        options.Progress = new Inline<TrainingProgress>(reports.Add);
        ml.Generative.Diffusion(options).Fit(Data(ml)).Dispose();
        Assert.AreEqual(3, reports.Count);
        CollectionAssert.AreEqual(new long[] { 1, 2, 3 }, reports.Select(r => r.Step).ToArray());
        Assert.IsTrue(reports.All(r => float.IsFinite(r.Loss) && r.Loss > 0));
        Assert.IsTrue(messages.Any(m => m.Contains("step 3")), string.Join("\n", messages.TakeLast(5)));
    }

    [TestMethod]
    public void CancelledTrainingStopsAndWritesACheckpoint()
    {
        string dir = Path.Combine(Path.GetTempPath(), "diffusion-ckpt-" + Guid.NewGuid().ToString("N"));
        try
        {
            var ml = new MLContext(seed: 1);
            using var cts = new CancellationTokenSource();
            var options = TestData.TinyOptions(steps: 100);
            options.CheckpointDirectory = dir;
            options.CancellationToken = cts.Token;
            options.Progress = new Inline<TrainingProgress>(p => { if (p.Step == 2) cts.Cancel(); });
            Assert.Throws<OperationCanceledException>(() => ml.Generative.Diffusion(options).Fit(Data(ml, 64)));
            Assert.IsTrue(File.Exists(Path.Combine(dir, TrainingCheckpoint.FileName)));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void NonFiniteLossStopsWithStepAndLastLoss()
    {
        var config = new UNetConfig { ImageSize = 8, BaseChannels = 8, ChannelMultipliers = new[] { 1, 2 }, AttentionResolutions = Array.Empty<int>(), NumResBlocks = 1, GroupNormGroups = 4 };
        using var model = new UNet(config);
        using var ema = new UNet(config);
        using var loop = new DiffusionTrainingLoop(model, ema, new DiffusionSchedule(NoiseSchedule.Linear, 50), new TrainingSettings { Seed = 1 }, CPU);
        using var good = rand(4, 1, 8, 8) * 2 - 1;
        float first = loop.TrainStep(good);
        using var bad = full(new long[] { 4, 1, 8, 8 }, float.NaN);
        var e = Assert.ThrowsExactly<NonFiniteLossException>(() => loop.TrainStep(bad));
        Assert.AreEqual(2L, e.StepNumber);
        Assert.AreEqual(first, e.LastFiniteLoss);
        StringAssert.Contains(e.Message, "step 2");
        Assert.AreEqual(1L, loop.Step);
    }

    [TestMethod]
    public void EmaFollowsTheWarmUpFormula()
    {
        var config = new UNetConfig { ImageSize = 8, BaseChannels = 8, ChannelMultipliers = new[] { 1 }, AttentionResolutions = Array.Empty<int>(), NumResBlocks = 1, GroupNormGroups = 4 };
        using var model = new UNet(config);
        using var shadow = new UNet(config);
        var ema = new ExponentialMovingAverage(model, shadow, 0.999);
        Assert.AreEqual(0.1, ema.DecayAt(0), 1e-12);          // (1 + 0) / (10 + 0)
        Assert.AreEqual(0.999, ema.DecayAt(1_000_000), 1e-12);
        var p = model.parameters().First();
        var s = shadow.parameters().First();
        using (no_grad()) p.add_(1.0);
        using var before = s.detach().clone();
        ema.Update();
        // shadow = 0.1 * shadow + 0.9 * (shadow + 1) = shadow + 0.9
        using var diff = s.detach() - before;
        Assert.AreEqual(0.9, diff.mean().item<float>(), 1e-5);
    }

    private sealed class Inline<T>(Action<T> handler) : IProgress<T>
    {
        public void Report(T value) => handler(value);
    }
}
