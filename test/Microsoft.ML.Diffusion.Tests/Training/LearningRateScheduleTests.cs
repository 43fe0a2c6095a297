using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Training;

[TestClass]
public class LearningRateScheduleTests
{
    [TestMethod]
    public void WarmUpRisesLinearlyThenCosineDecaysToZero()
    {
        // Warm-up of 4 steps: peak * (step + 1) / 4.
        Assert.AreEqual(0.25, LearningRateCurve.At(0, 1.0, 4, LearningRateSchedule.Cosine, 14), 1e-12);
        Assert.AreEqual(1.0, LearningRateCurve.At(3, 1.0, 4, LearningRateSchedule.Cosine, 14), 1e-12);
        // Cosine over the 10 steps after it: (1 + cos(pi p)) / 2 with p = (step - 4) / 10.
        Assert.AreEqual(1.0, LearningRateCurve.At(4, 1.0, 4, LearningRateSchedule.Cosine, 14), 1e-12);
        Assert.AreEqual(0.5, LearningRateCurve.At(9, 1.0, 4, LearningRateSchedule.Cosine, 14), 1e-12);
        Assert.AreEqual((1 + Math.Cos(Math.PI * 0.8)) / 2, LearningRateCurve.At(12, 1.0, 4, LearningRateSchedule.Cosine, 14), 1e-12);
        Assert.AreEqual(0.0, LearningRateCurve.At(14, 1.0, 4, LearningRateSchedule.Cosine, 14), 1e-12);
        Assert.AreEqual(0.0, LearningRateCurve.At(20, 1.0, 4, LearningRateSchedule.Cosine, 14), 1e-12);   // past the end
        // Constant: the peak after the warm-up, whatever the total.
        Assert.AreEqual(2e-4, LearningRateCurve.At(1000, 2e-4, 4, LearningRateSchedule.Constant, null), 1e-18);
        Assert.AreEqual(2e-4, LearningRateCurve.At(0, 2e-4, 0, LearningRateSchedule.Constant, null), 1e-18);
    }

    [TestMethod]
    public void ACoolDownFallsLinearlyToZeroOverTheLastSteps()
    {
        // Warm-up 2, total 12, cool-down 4: constant 1 for steps 2..7, then (12 - step) / 4 for steps 8..11.
        double[] expected = { 0.5, 1, 1, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25, 0, 0 };
        for (int step = 0; step < expected.Length; step++)
            Assert.AreEqual(expected[step], LearningRateCurve.At(step, 1.0, 2, LearningRateSchedule.Constant, 12, decaySteps: 4), 1e-12, $"step {step}");
        // A cool-down longer than the run after the warm-up starts where the warm-up ends.
        Assert.AreEqual(1.0, LearningRateCurve.At(2, 1.0, 2, LearningRateSchedule.Constant, 6, decaySteps: 100), 1e-12);
        Assert.AreEqual(0.5, LearningRateCurve.At(4, 1.0, 2, LearningRateSchedule.Constant, 6, decaySteps: 100), 1e-12);
        // No cool-down: the constant curve, whatever the total.
        Assert.AreEqual(1.0, LearningRateCurve.At(11, 1.0, 2, LearningRateSchedule.Constant, 12, decaySteps: 0), 1e-12);
    }

    /// <summary>A constant-rate run resumed with a cool-down (its checkpoint before the cool-down starts) trains exactly like a
    /// run that had the cool-down from the start, and reports the cooled-down rates.</summary>
    [TestMethod]
    public void AConstantRunResumedIntoACoolDownMatchesOneRunWithIt()
    {
        string dir = TestData.TempDirectory("diffusion-cool-down");
        try
        {
            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(TestData.Squares(16).ToList());   // 2 steps of 8 per epoch
            DiffusionTrainer.Options Options(int epochs, int decay, string? checkpoints, List<(long, double)>? rates = null)
            {
                var o = TestData.TinyOptions();
                o.MaxSteps = null;
                o.Epochs = epochs;
                o.LearningRateDecaySteps = decay;
                o.CheckpointDirectory = checkpoints;
                o.LogInterval = 1;
                if (rates != null) o.Progress = new SyncProgress<TrainingProgress>(p => rates.Add((p.Step, p.LearningRate)));
                return o;
            }
            byte[][] Sample(DiffusionModel m) => m.Generate(2, new SamplerOptions { Steps = 4, Seed = 5 }).Select(TestData.Pixels).ToArray();

            ml.Generative.Diffusion(Options(epochs: 2, decay: 0, dir)).Fit(data).Dispose();   // constant, steps 1..4
            var rates = new List<(long, double)>();
            using var resumed = ml.Generative.Diffusion(Options(epochs: 4, decay: 4, dir, rates)).Fit(data);
            CollectionAssert.AreEqual(new long[] { 5, 6, 7, 8 }, rates.Select(r => r.Item1).ToArray());
            double[] factors = { 1, 0.75, 0.5, 0.25 };   // (8 - step) / 4 for the 0-based steps 4..7
            for (int i = 0; i < 4; i++) Assert.AreEqual(1e-3f * factors[i], rates[i].Item2, 1e-12, $"step {rates[i].Item1}");
            using var whole = ml.Generative.Diffusion(Options(epochs: 4, decay: 4, checkpoints: null)).Fit(data);
            var a = Sample(resumed);
            var b = Sample(whole);
            for (int i = 0; i < a.Length; i++) CollectionAssert.AreEqual(b[i], a[i], $"image {i}");
            using var constant = ml.Generative.Diffusion(Options(epochs: 4, decay: 0, checkpoints: null)).Fit(data);
            Assert.IsFalse(Sample(constant).Zip(a).All(p => p.First.SequenceEqual(p.Second)), "the cool-down changes the weights");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [TestMethod]
    public void TheLoopStepsWithTheScheduledRate()
    {
        var config = new UNetConfig { ImageSize = 8, BaseChannels = 8, ChannelMultipliers = new[] { 1 }, AttentionResolutions = Array.Empty<int>(), NumResBlocks = 1, GroupNormGroups = 4 };
        using var model = new UNet(config);
        using var ema = new UNet(config);
        var settings = new TrainingSettings
        {
            Seed = 1, LearningRate = 1e-3, WarmupSteps = 2, LearningRateSchedule = LearningRateSchedule.Cosine, TotalSteps = 6,
        };
        using var loop = new DiffusionTrainingLoop(model, ema, new DiffusionSchedule(NoiseSchedule.Linear, 50), settings, CPU);
        using var x = rand(4, 1, 8, 8) * 2 - 1;
        var used = new List<double>();
        for (int i = 0; i < 6; i++)
        {
            loop.TrainStep(x);
            used.Add(loop.CurrentLearningRate);
        }
        double[] expected = { 5e-4, 1e-3, 1e-3, 1e-3 * (1 + Math.Cos(Math.PI * 0.25)) / 2, 5e-4, 1e-3 * (1 + Math.Cos(Math.PI * 0.75)) / 2 };
        for (int i = 0; i < 6; i++) Assert.AreEqual(expected[i], used[i], 1e-12, $"step {i}");
    }

    [TestMethod]
    public void BadScheduleOptionsAreRefusedClearly()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(TestData.Squares(16).ToList());
        var negative = TestData.TinyOptions(steps: 2);
        negative.LearningRateWarmupSteps = -1;
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Generative.Diffusion(negative).Fit(data));
        StringAssert.Contains(e.Message, "LearningRateWarmupSteps");

        // A cosine decay needs the run's length: a streamed view of unknown row count without MaxSteps cannot give it.
        var cosine = TestData.TinyOptions(steps: 2);
        cosine.MaxSteps = null;
        cosine.Epochs = 1;
        cosine.LearningRateSchedule = LearningRateSchedule.Cosine;
        var streamed = ml.Data.LoadFromEnumerable(Stream(16));
        Assert.IsNull(streamed.GetRowCount());
        var c = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Generative.Diffusion(cosine).Fit(streamed));
        StringAssert.Contains(c.Message, "MaxSteps");

        // A cool-down: not negative, only after a constant rate, and it needs the run's length too.
        var coolDown = TestData.TinyOptions(steps: 2);
        coolDown.LearningRateDecaySteps = -3;
        var d = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Generative.Diffusion(coolDown));
        StringAssert.Contains(d.Message, "LearningRateDecaySteps");
        coolDown.LearningRateDecaySteps = 10;
        coolDown.LearningRateSchedule = LearningRateSchedule.Cosine;
        var both = Assert.ThrowsExactly<ArgumentException>(() => ml.Generative.Diffusion(coolDown));
        StringAssert.Contains(both.Message, "LearningRateSchedule is Cosine");
        coolDown.LearningRateSchedule = LearningRateSchedule.Constant;
        coolDown.MaxSteps = null;
        var unknown = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Generative.Diffusion(coolDown).Fit(streamed));
        StringAssert.Contains(unknown.Message, "LearningRateDecaySteps is 10");
    }

    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }

    private static IEnumerable<TestData.Image8> Stream(int n)
    {
        foreach (var image in TestData.Squares(n)) yield return image;
    }
}
