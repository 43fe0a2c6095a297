using System.Diagnostics;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Training;

namespace Microsoft.ML.Diffusion.Tests.Reliability;

/// <summary>
/// Faults lose nothing: training killed in another process resumes from its checkpoint directory to the same steps and
/// weights as an uninterrupted run; a NaN loss stops with the step and last finite loss and keeps the last good checkpoint;
/// cancellation stops training and sampling within 2 seconds and leaves them usable.
/// </summary>
[TestClass]
[TestCategory("Fault")]
public class FaultTests
{
    private const int Steps = 24;
    private static IDataView Data(MLContext ml) => ml.Data.LoadFromEnumerable(TestData.Squares(24).ToList());

    /// <summary>The child's options: the samples' hidden train-synthetic command trains TestData.TinyOptions on TestData.Squares(24).</summary>
    private static DiffusionTrainer.Options ChildOptions(string? dir)
    {
        var o = TestData.TinyOptions(steps: Steps);
        o.CheckpointDirectory = dir;
        o.CheckpointInterval = 1;
        return o;
    }

    [TestMethod]
    public void TrainingKilledTwiceAtRandomPointsResumesToTheSameStepsAndWeights()
    {
        int seed = Environment.TickCount;
        var rng = new Random(seed);
        string dir = TestData.TempDirectory("diffusion-kill");
        using var threads = ReliabilityKit.OneTorchThread();   // the children run on one thread too: the same kernels
        try
        {
            // First child: killed after a random step; second child resumes and is killed again later.
            int firstKill = rng.Next(2, Steps / 2);
            var (firstLast, firstFinished) = RunChildAndKill(dir, firstKill);
            Assert.IsFalse(firstFinished, $"the first child finished before it was killed (seed {seed})");
            int secondKill = rng.Next(firstLast + 2, Steps - 2);
            var (secondLast, secondFinished) = RunChildAndKill(dir, secondKill);
            Assert.IsFalse(secondFinished, $"the second child finished before it was killed (seed {seed})");
            Assert.IsTrue(File.Exists(TrainingCheckpoint.PathIn(dir)), "no checkpoint survived the kills");

            // This process resumes and finishes; every step is done exactly once.
            var ml = new MLContext(seed: 1);
            var reported = new List<long>();
            var options = ChildOptions(dir);
            options.Progress = new Inline<TrainingProgress>(p => reported.Add(p.Step));
            using var resumed = ml.Generative.Diffusion(options).Fit(Data(ml));
            Assert.AreEqual((long)Steps, resumed.Config.TrainedSteps, $"seed {seed}");
            // The child may have run a few steps past the last line read before the kill landed: the resumed run starts after
            // the checkpoint that survived, somewhere after step 1, and continues without gap or repeat.
            Assert.IsTrue(reported.Count > 0 && reported[0] > 1, $"training restarted instead of resuming (seed {seed})");
            CollectionAssert.AreEqual(Enumerable.Range((int)reported[0], Steps - (int)reported[0] + 1).Select(s => (long)s).ToArray(), reported.ToArray(),
                $"steps of the resumed run (seed {seed})");

            using var straight = new MLContext(seed: 1).Generative.Diffusion(ChildOptions(null)).Fit(Data(ml));
            CollectionAssert.AreEqual(ReliabilityKit.WeightBytes(ml, straight), ReliabilityKit.WeightBytes(ml, resumed),
                $"the run killed after steps {firstLast} and {secondLast} and resumed differs from the uninterrupted run (seed {seed})");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>Starts train-synthetic on <paramref name="dir"/>, kills it (SIGKILL) once it reports step <paramref name="killAt"/>
    /// or later; returns the last step it reported and whether it finished on its own.</summary>
    private static (int LastStep, bool Finished) RunChildAndKill(string dir, int killAt)
    {
        using var child = ReliabilityKit.StartSamples(
            $"train-synthetic --count 24 --max-steps {Steps} --checkpoint-dir \"{dir}\" --checkpoint-interval 1 --threads 1");
        var stderr = new System.Text.StringBuilder();
        child.ErrorDataReceived += (_, e) => { lock (stderr) stderr.AppendLine(e.Data); };
        child.BeginErrorReadLine();
        int last = 0;
        bool finished = false;
        var watch = Stopwatch.StartNew();
        while (child.StandardOutput.ReadLine() is string line)
        {
            if (line.StartsWith("step ", StringComparison.Ordinal)) last = int.Parse(line[5..]);
            if (line.StartsWith("done", StringComparison.Ordinal)) finished = true;
            if (last >= killAt)
            {
                child.Kill(entireProcessTree: true);   // SIGKILL: no finally block, no flush, as in a power cut
                break;
            }
            Assert.IsTrue(watch.Elapsed < TimeSpan.FromMinutes(3), "the child is too slow");
        }
        Assert.IsTrue(child.WaitForExit(60_000), "the killed child did not exit");
        string errors;
        lock (stderr) errors = stderr.ToString();   // the reader thread may still append
        Assert.IsTrue(last > 0 || finished, $"the child reported no step (exit code {child.ExitCode}): {errors}");
        return (last, finished);
    }

    [TestMethod]
    public void AHalfWrittenTemporaryCheckpointIsIgnored()
    {
        // A crash during Write leaves checkpoint.bin.tmp half-written next to the last complete checkpoint.bin.
        string dir = TestData.TempDirectory("diffusion-tmp");
        using var threads = ReliabilityKit.OneTorchThread();
        try
        {
            var ml = new MLContext(seed: 1);
            var first = TestData.TinyOptions(steps: 2);
            first.CheckpointDirectory = dir;
            ml.Generative.Diffusion(first).Fit(Data(ml)).Dispose();
            var complete = File.ReadAllBytes(TrainingCheckpoint.PathIn(dir));
            File.WriteAllBytes(TrainingCheckpoint.PathIn(dir) + ".tmp", complete[..(complete.Length / 3)]);
            var second = TestData.TinyOptions(steps: 4);
            second.CheckpointDirectory = dir;
            using var resumed = ml.Generative.Diffusion(second).Fit(Data(ml));
            Assert.AreEqual(4L, resumed.Config.TrainedSteps);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void DivergingTrainingStopsWithStepAndLastLossAndKeepsTheLastGoodCheckpoint()
    {
        string dir = TestData.TempDirectory("diffusion-nan");
        using var threads = ReliabilityKit.OneTorchThread();
        try
        {
            var ml = new MLContext(seed: 1);
            var options = TestData.TinyOptions(steps: 20);
            options.LearningRate = 1e30f;   // finite, but the first AdamW step takes the weights to about 1e30: the next loss overflows
            options.CheckpointDirectory = dir;
            options.CheckpointInterval = 1;
            var losses = new List<float>();
            options.Progress = new Inline<TrainingProgress>(p => losses.Add(p.Loss));
            var e = Assert.ThrowsExactly<NonFiniteLossException>(() => ml.Generative.Diffusion(options).Fit(Data(ml)));
            Console.WriteLine(e.Message);
            long failed = e.StepNumber;
            Assert.AreEqual(losses.Count + 1L, failed, "the failing step follows the last reported one");
            Assert.IsTrue(float.IsFinite(e.LastFiniteLoss));
            Assert.AreEqual(losses[^1], e.LastFiniteLoss);
            Assert.IsFalse(float.IsFinite(e.Loss));
            StringAssert.Contains(e.Message, $"step {failed}");
            StringAssert.Contains(e.Message, "last finite loss");
            StringAssert.Contains(e.Message, $"The last good checkpoint (step {failed - 1}) is kept in '{TrainingCheckpoint.PathIn(dir)}'");
            Assert.AreEqual(TrainingCheckpoint.PathIn(dir), e.CheckpointPath);

            // The kept checkpoint loads: resuming it with the same options up to its step gives a model of that step.
            options.MaxSteps = failed - 1;
            options.Progress = null;
            using var kept = ml.Generative.Diffusion(options).Fit(Data(ml));
            Assert.AreEqual(failed - 1, kept.Config.TrainedSteps);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void CancellingTrainingReturnsWithinTwoSecondsAndTrainingResumes()
    {
        string dir = TestData.TempDirectory("diffusion-cancel");
        using var threads = ReliabilityKit.OneTorchThread();
        try
        {
            var ml = new MLContext(seed: 1);
            using var cts = new CancellationTokenSource();
            using var started = new ManualResetEventSlim();
            long lastStep = 0;
            var options = TestData.TinyOptions(steps: 100_000);
            options.CheckpointDirectory = dir;
            options.CheckpointInterval = 1000;
            options.CancellationToken = cts.Token;
            options.Progress = new Inline<TrainingProgress>(p =>
            {
                lastStep = p.Step;
                if (p.Step == 3) started.Set();
            });
            var training = Task.Run(() => ml.Generative.Diffusion(options).Fit(Data(ml)));
            Assert.IsTrue(started.Wait(TimeSpan.FromMinutes(2)), "training did not start");
            Thread.Sleep(300);   // in the middle of a step
            var latency = Stopwatch.StartNew();
            cts.Cancel();
            var e = Assert.Throws<AggregateException>(() => training.Wait(TimeSpan.FromSeconds(30)));
            latency.Stop();
            Assert.IsInstanceOfType<OperationCanceledException>(e.InnerException);
            Console.WriteLine($"training returned {latency.ElapsedMilliseconds} ms after Cancel(), at step {lastStep}");
            Assert.IsTrue(latency.Elapsed < TimeSpan.FromSeconds(2), $"training returned {latency.ElapsedMilliseconds} ms after Cancel()");

            // Usable: the same options resume from the checkpoint written on cancellation and finish.
            var more = TestData.TinyOptions(steps: (int)lastStep + 2);
            more.CheckpointDirectory = dir;
            using var resumed = ml.Generative.Diffusion(more).Fit(Data(ml));
            Assert.AreEqual(lastStep + 2, resumed.Config.TrainedSteps);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void CancellingSamplingReturnsWithinTwoSecondsAndTheModelStillGeneratesTheSameImages()
    {
        using var threads = ReliabilityKit.OneTorchThread();
        var ml = new MLContext(seed: 1);
        using var model = ml.Generative.Diffusion(TestData.TinyOptions(steps: 2)).Fit(Data(ml));
        var options = new SamplerOptions { Sampler = SamplerKind.Ddpm, Seed = 9, BatchSize = 4 };
        var before = model.Generate(2, options).Select(TestData.Pixels).ToList();

        // Generate: 64 images in 16 batches of 50 DDPM steps, cancelled after the first steps.
        AssertCancelsPromptly("Generate", (token, progress) =>
            model.Generate(64, new SamplerOptions { Sampler = SamplerKind.Ddpm, BatchSize = 4, CancellationToken = token, Progress = progress }));
        // Transform (the ML.NET path): the model's sampler carries the token.
        AssertCancelsPromptly("Transform", (token, progress) =>
        {
            var cancellable = model.WithSampler(new SamplerOptions { Sampler = SamplerKind.Ddpm, BatchSize = 4, CancellationToken = token, Progress = progress });
            foreach (var image in cancellable.Transform(ml.Generative.CreateRequests(64)).GetColumn<MLImage>("GeneratedImage")) image.Dispose();
        });

        var after = model.Generate(2, options).Select(TestData.Pixels).ToList();
        for (int i = 0; i < 2; i++) CollectionAssert.AreEqual(before[i], after[i], $"image {i} changed after the cancellations");
    }

    private static void AssertCancelsPromptly(string what, Action<CancellationToken, IProgress<SamplingProgress>> work)
    {
        using var cts = new CancellationTokenSource();
        using var started = new ManualResetEventSlim();
        var task = Task.Run(() => work(cts.Token, new Inline<SamplingProgress>(p => { if (p.Step == 5) started.Set(); })));
        Assert.IsTrue(started.Wait(TimeSpan.FromMinutes(1)), $"{what}: sampling did not start");
        Thread.Sleep(50);
        var latency = Stopwatch.StartNew();
        cts.Cancel();
        var e = Assert.Throws<AggregateException>(() => task.Wait(TimeSpan.FromSeconds(30)));
        latency.Stop();
        var inner = e.InnerException;
        while (inner is not OperationCanceledException && inner?.InnerException is { } next) inner = next;   // ML.NET cursors may wrap it
        Assert.IsInstanceOfType<OperationCanceledException>(inner, $"{what}: {e.InnerException}");
        Console.WriteLine($"{what} returned {latency.ElapsedMilliseconds} ms after Cancel()");
        Assert.IsTrue(latency.Elapsed < TimeSpan.FromSeconds(2), $"{what} returned {latency.ElapsedMilliseconds} ms after Cancel()");
    }

    private sealed class Inline<T>(Action<T> handler) : IProgress<T>
    {
        public void Report(T value) => handler(value);
    }
}
