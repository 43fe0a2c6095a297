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
    }

    private static IEnumerable<TestData.Image8> Stream(int n)
    {
        foreach (var image in TestData.Squares(n)) yield return image;
    }
}
