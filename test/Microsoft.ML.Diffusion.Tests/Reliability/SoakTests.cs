using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Training;

namespace Microsoft.ML.Diffusion.Tests.Reliability;

/// <summary>
/// Long runs stay bounded: resident memory (VmRSS after a full GC) after 300 training steps and after 2,000 sampling steps is
/// within 5% of its value after the warm-up, and sampling leaves no TorchSharp tensor alive. The 28x28 figures come from the
/// samples' <c>soak</c> command (docs/reliability.md).
/// </summary>
[TestClass]
[TestCategory("Soak")]
public class SoakTests
{
    private const double MaxGrowth = 0.05;

    [TestMethod]
    public void ThreeHundredTrainingStepsKeepMemoryFlat()
    {
        using var threads = ReliabilityKit.OneTorchThread();
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(TestData.Squares(64).ToList());
        string dir = TestData.TempDirectory("diffusion-soak");
        var readings = new List<(long Step, long Rss)>();
        long liveAtWarmUp = 0, liveAtEnd = 0;
        try
        {
            var options = SoakOptions(steps: 300);
            options.CheckpointDirectory = dir;
            options.CheckpointInterval = 25;    // checkpoints are written along the way too
            options.Progress = new Inline<TrainingProgress>(p =>
            {
                if (p.Step % 25 == 0) readings.Add((p.Step, ReliabilityKit.ResidentBytes()));
                if (p.Step == 50) liveAtWarmUp = LiveTensors();
                if (p.Step == 299) liveAtEnd = LiveTensors();   // before the final checkpoint
            });
            ml.Generative.Diffusion(options).Fit(data).Dispose();
        }
        finally
        {
            Directory.Delete(dir, true);
        }
        Assert.AreEqual(liveAtWarmUp, liveAtEnd, "training steps left tensors alive on the training thread");
        AssertFlat("training", readings, warmUpStep: 50);
    }

    [TestMethod]
    public void TwoThousandSamplingStepsKeepMemoryFlatAndLeakNoTensor()
    {
        using var threads = ReliabilityKit.OneTorchThread();
        var ml = new MLContext(seed: 1);
        using var model = ml.Generative.Diffusion(SoakOptions(steps: 2)).Fit(ml.Data.LoadFromEnumerable(TestData.Squares(16).ToList()));
        var engine = ml.Model.CreatePredictionEngine<SeedRow, GeneratedRow>(model.WithSampler(new SamplerOptions { Sampler = SamplerKind.Ddpm }));
        var readings = new List<(long Step, long Rss)>();
        long steps = 0;
        var count = new Inline<SamplingProgress>(_ => steps++);
        long liveBefore = 0;
        for (int pass = 0; pass < 40; pass++)   // 40 x 50 DDPM steps: Generate, PredictionEngine and Transform in turn
        {
            if (pass == 4) liveBefore = LiveTensors();
            switch (pass % 3)
            {
                case 0:
                    model.Generate(2, new SamplerOptions { Sampler = SamplerKind.Ddpm, Seed = (uint)pass, Progress = count });
                    break;
                case 1:
                    engine.Predict(new SeedRow { Seed = (uint)pass }).GeneratedImage.Dispose();
                    steps += 50;
                    break;
                default:
                    foreach (var image in model.WithSampler(new SamplerOptions { Sampler = SamplerKind.Ddpm })
                                 .Transform(ml.Generative.CreateRequests(2, (uint)pass)).GetColumn<MLImage>("GeneratedImage"))
                        image.Dispose();
                    steps += 50;   // one batch of 2 images, T = 50 DDPM steps
                    break;
            }
            readings.Add((steps, ReliabilityKit.ResidentBytes()));
        }
        Assert.AreEqual(2000L, steps);
        Assert.AreEqual(liveBefore, LiveTensors(), "tensors created by sampling on this thread were left alive");
        AssertFlat("sampling", readings, warmUpStep: 200);
    }

    /// <summary>The smallest U-Net (one level, no attention) on 8x8 images, batch 2: the loop, not the arithmetic, is under test.</summary>
    private static DiffusionTrainer.Options SoakOptions(int steps)
    {
        var o = TestData.TinyOptions(steps);
        o.ChannelMultipliers = new[] { 1 };
        o.AttentionResolutions = Array.Empty<int>();
        o.BatchSize = 2;
        o.LogInterval = 1000;
        return o;
    }

    /// <summary>Tensors alive that this thread created (TorchSharp's dispose-scope statistics).</summary>
    private static long LiveTensors() => TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;

    private static void AssertFlat(string what, List<(long Step, long Rss)> readings, long warmUpStep)
    {
        var warm = readings.First(r => r.Step >= warmUpStep);
        var last = readings[^1];
        double growth = (double)last.Rss / warm.Rss - 1;
        string table = string.Join(", ", readings.Select(r => $"{r.Step}: {r.Rss / (1024.0 * 1024.0):F1}"));
        Console.WriteLine($"{what}: RSS MiB by step: {table}; growth after warm-up {100 * growth:F2}%");
        Assert.IsTrue(growth < MaxGrowth,
            $"{what}: RSS grew by {100 * growth:F1}% from step {warm.Step} ({warm.Rss >> 20} MiB) to step {last.Step} ({last.Rss >> 20} MiB): {table}");
    }

    private sealed class Inline<T>(Action<T> handler) : IProgress<T>
    {
        public void Report(T value) => handler(value);
    }

    private sealed class SeedRow
    {
        public uint Seed { get; set; }
    }

    private sealed class GeneratedRow
    {
        [Microsoft.ML.Transforms.Image.ImageType(8, 8)]
        public MLImage GeneratedImage { get; set; } = null!;
    }
}
