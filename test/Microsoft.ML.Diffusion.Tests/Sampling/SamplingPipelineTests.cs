using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedulers;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Samplers;

/// <summary>
/// The sampling pipeline's start and end steps: a loop that stops after k steps returns what k scheduler steps on the model's network
/// give, step 0 is x_T itself, the last step is the whole loop, and a bad end step is refused.
/// </summary>
[TestClass]
public sealed class SamplingPipelineTests
{
    private static TestModel _fixture = null!;
    private static readonly uint[] Seeds = { 11, 12, 13 };

    [ClassInitialize]
    public static void Init(TestContext _) => _fixture = TestModel.Shared("sampling-pipeline");

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    private static DiffusionModel Model => _fixture.Model;

    private static SamplerOptions Ddim(int steps = 5) => new() { Sampler = SamplerKind.Ddim, Steps = steps, BatchSize = 2 };

    private static Tensor Run(SamplerOptions options, int? endStep) => Model.Pipeline.Run(new SamplingRequest(Seeds, options) { EndStep = endStep });

    [TestMethod]
    public void EndStepZero_IsTheSeedsStartingNoise()
    {
        using var x = Run(Ddim(), 0);
        using var expected = stack(Seeds.Select(s => DiffusionSampler.InitialNoise(s, new long[] { 1, 8, 8 })).ToArray());
        Assert.IsTrue(x.equal(expected).all().item<bool>(), "x_T of each seed, untouched");
    }

    [TestMethod]
    public void EndStepAtTheLastStep_IsTheWholeLoop()
    {
        using var whole = Run(Ddim(), null);
        using var ended = Run(Ddim(), 5);
        Assert.IsTrue(whole.equal(ended).all().item<bool>(), "bit for bit");
    }

    /// <summary>k = 2 of 5 DDIM steps: x_T of each seed, then x_{t_{i+1}} = DDIM(x_{t_i}, eps_theta(x_{t_i}, t_i)) twice, by hand with
    /// the scheduler and the model's network.</summary>
    [TestMethod]
    public void EndStepK_EqualsKSchedulerStepsByHand()
    {
        var options = Ddim();
        using var ended = Run(options, 2);
        var scheduler = SchedulerFactory.Create(Model.Schedule, options, Model.Config.Prediction, Model.Config.Variance, Model.Config.Objective);
        using var noGrad = no_grad();
        var x = stack(Seeds.Select(s => DiffusionSampler.InitialNoise(s, new long[] { 1, 8, 8 })).ToArray());
        for (int i = 0; i < 2; i++)
        {
            using var t = full(new long[] { Seeds.Length }, (long)scheduler.ModelTimestep(i), dtype: int64);
            using var eps = Model.Pipeline.NetworkForward(x, t, null);
            var next = scheduler.StepAt(i, eps, x, null).PrevSample;
            x.Dispose();
            x = next;
        }
        using (x)
        {
            double diff = (ended - x).abs().max().item<float>();
            Assert.IsTrue(diff < 1e-5, $"max |pipeline - by hand| = {diff}");
            using var whole = Run(options, null);
            Assert.IsTrue((whole - x).abs().max().item<float>() > 1e-3, "two steps are not the whole loop");
        }
    }

    [TestMethod]
    public void ProgressCountsTheStepsRun()
    {
        var reports = new List<SamplingProgress>();
        var options = Ddim();
        options.BatchSize = 3;
        options.Progress = new SyncProgress(reports.Add);
        using var x = Run(options, 3);
        Assert.AreEqual(3, reports.Count);
        Assert.IsTrue(reports.All(r => r.TotalSteps == 3), string.Join(", ", reports.Select(r => r.TotalSteps)));
    }

    [TestMethod]
    public void NegativeEndStep_IsRefused()
    {
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Run(Ddim(), -1));
        StringAssert.Contains(e.Message, "EndStep");
    }

    private sealed class SyncProgress(Action<SamplingProgress> report) : IProgress<SamplingProgress>
    {
        public void Report(SamplingProgress value) => report(value);
    }
}
