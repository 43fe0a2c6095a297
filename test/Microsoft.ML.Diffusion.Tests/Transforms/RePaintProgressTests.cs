using System.Text.RegularExpressions;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Sampling;

namespace Microsoft.ML.Diffusion.Tests.Transforms;

/// <summary>Issue 15, item 5: a long RePaint transform is not silent: it logs to the MLContext log and reports every schedule
/// entry to the options' Progress, counting up to the total in each batch, and it stops on cancellation.</summary>
[TestClass]
public class RePaintProgressTests
{
    private static TestModel _fixture = null!;

    [ClassInitialize]
    public static void Init(TestContext _) => _fixture = TestModel.Shared("diffusion-repaint-progress");

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    /// <summary>Reports synchronously, on the sampling thread (Progress&lt;T&gt; would post them to the thread pool).</summary>
    private sealed class Recorder : IProgress<SamplingProgress>
    {
        public List<SamplingProgress> Reports { get; } = new();
        public void Report(SamplingProgress value) => Reports.Add(value);
    }

    private static IDataView Rows(MLContext ml, int count) => ml.Data.LoadFromEnumerable(TestData.Squares(count).ToList());

    [TestMethod]
    public void InpaintingLogsAndReportsProgressUpToTheTotal()
    {
        var ml = new MLContext(seed: 1);
        var log = new List<string>();
        ml.Log += (_, e) => { lock (log) log.Add(e.Message); };
        var recorder = new Recorder();
        var options = new InpaintOptions { Steps = 6, JumpLength = 2, Resamplings = 2, BatchSize = 4, Progress = recorder };
        int total = options.ScheduleLength(_fixture.Model.Timesteps);
        var images = ml.Generative.Inpaint(_fixture.Model, "Inpainted", "Image", null, options).Fit(Rows(ml, 6))
            .Transform(Rows(ml, 6)).GetColumn<MLImage>("Inpainted").ToArray();
        Assert.AreEqual(6, images.Length);

        // Progress: rows 0..3 are batch 0 and rows 4..5 batch 1; each counts 1, 2, ..., total.
        foreach (int batch in new[] { 0, 1 })
        {
            var steps = recorder.Reports.Where(r => r.BatchIndex == batch).ToList();
            CollectionAssert.AreEqual(Enumerable.Range(1, total).ToArray(), steps.Select(r => r.Step).ToArray(), $"batch {batch}");
            Assert.IsTrue(steps.All(r => r.TotalSteps == total));
        }
        Assert.AreEqual(2 * total, recorder.Reports.Count);

        // The MLContext log: a start line with the cost, then lines counting up to total/total, for each batch.
        List<string> lines;
        lock (log) lines = log.Where(m => m.Contains("Inpainting, rows")).ToList();
        var first = lines.Where(m => m.Contains("rows 0..3")).ToList();
        var second = lines.Where(m => m.Contains("rows 4..5")).ToList();
        StringAssert.Contains(first[0], $"{total} schedule entries, {options.NetworkCalls(_fixture.Model.Timesteps)} network calls");
        foreach (var batch in new[] { first, second })
        {
            var counts = batch.Skip(1).Select(m => int.Parse(Regex.Match(m, @": (\d+)/(\d+) schedule entries").Groups[1].Value)).ToList();
            Assert.IsTrue(counts.Count >= 2, "several progress lines per batch");
            CollectionAssert.AreEqual(counts.OrderBy(c => c).ToList(), counts, "the counts go up");
            Assert.AreEqual(total, counts[^1], "the last line reports the total");
            StringAssert.Contains(batch[^1], "(100%)");
        }
    }

    [TestMethod]
    public void UpscalingLogsProgress()
    {
        var ml = new MLContext(seed: 1);
        var log = new List<string>();
        ml.Log += (_, e) => { lock (log) log.Add(e.Message); };
        var options = new UpscaleOptions { Factor = 2, Steps = 4, JumpLength = 2, Resamplings = 2 };
        int total = options.ScheduleLength(_fixture.Model.Timesteps);
        var small = ml.Transforms.ResizeImages("Image", 4, 4).Fit(Rows(ml, 2)).Transform(Rows(ml, 2));
        ml.Generative.Upscale(_fixture.Model, "Upscaled", "Image", options).Fit(small).Transform(small).GetColumn<MLImage>("Upscaled").ToArray();
        lock (log) Assert.IsTrue(log.Any(m => m.Contains("Upscaling x2, rows 0..1") && m.Contains($"{total}/{total} schedule entries (100%)")));
    }

    [TestMethod]
    public void ACancelledTokenStopsInpainting()
    {
        var ml = new MLContext(seed: 1);
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        var options = new InpaintOptions { Steps = 6, JumpLength = 2, Resamplings = 2, CancellationToken = cts.Token };
        var output = ml.Generative.Inpaint(_fixture.Model, "Inpainted", "Image", null, options).Fit(Rows(ml, 2)).Transform(Rows(ml, 2));
        Assert.ThrowsExactly<OperationCanceledException>(() => output.GetColumn<MLImage>("Inpainted").ToArray());
    }

    [TestMethod]
    public void TheDefaultCostIsDocumentedAndComputed()
    {
        var options = new InpaintOptions();
        Assert.AreEqual(2410, options.NetworkCalls(1000), "RePaint's defaults: 250 + 9 * 10 * 24 network calls per batch");
    }
}
