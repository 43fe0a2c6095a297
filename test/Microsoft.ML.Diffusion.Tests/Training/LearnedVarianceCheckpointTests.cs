using Microsoft.ML.Diffusion.Training;

namespace Microsoft.ML.Diffusion.Tests.Training;

/// <summary>Checkpoints of learned-variance runs: they resume, and a fixed-variance checkpoint is not resumed by a learned run.</summary>
[TestClass]
public class LearnedVarianceCheckpointTests
{
    private static IDataView Data(MLContext ml) => ml.Data.LoadFromEnumerable(TestData.Squares(16).ToList());

    [TestMethod]
    public void LearnedVarianceRunResumesAndFixedCheckpointIsRejected()
    {
        string dir = Path.Combine(Path.GetTempPath(), "diffusion-lv-ckpt-" + Guid.NewGuid().ToString("N"));
        string fixedDir = dir + "-fixed";
        try
        {
            var ml = new MLContext(seed: 1);
            var first = TestData.TinyOptions(steps: 2);
            first.Variance = VarianceType.Learned;
            first.CheckpointDirectory = dir;
            ml.Generative.Diffusion(first).Fit(Data(ml)).Dispose();
            Assert.IsTrue(File.Exists(Path.Combine(dir, TrainingCheckpoint.FileName)));

            var second = TestData.TinyOptions(steps: 4);
            second.Variance = VarianceType.Learned;
            second.CheckpointDirectory = dir;
            using (var resumed = ml.Generative.Diffusion(second).Fit(Data(ml)))
            {
                Assert.AreEqual(4L, resumed.Config.TrainedSteps);
                Assert.AreEqual(VarianceType.Learned, resumed.Config.Variance);
            }

            var fixedRun = TestData.TinyOptions(steps: 2);
            fixedRun.CheckpointDirectory = fixedDir;
            ml.Generative.Diffusion(fixedRun).Fit(Data(ml)).Dispose();
            var learnedOnFixed = TestData.TinyOptions(steps: 4);
            learnedOnFixed.Variance = VarianceType.Learned;
            learnedOnFixed.CheckpointDirectory = fixedDir;
            var e = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Generative.Diffusion(learnedOnFixed).Fit(Data(ml)));
            StringAssert.Contains(e.Message, "other training options");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
            if (Directory.Exists(fixedDir)) Directory.Delete(fixedDir, true);
        }
    }
}
