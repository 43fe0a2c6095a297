namespace Microsoft.ML.Diffusion.Tests.Cli;

/// <summary>
/// <c>train --objective flow-matching</c>, <c>--rescale-betas-zero-snr</c> and <c>--offset-noise</c> on the tiny Fashion-MNIST-shaped
/// set of <see cref="CliLearningCurveTests"/>; <c>generate</c> picks a flow model's own sampler and names both objectives when told
/// to use a DDPM sampler.
/// </summary>
[TestClass]
public sealed class CliObjectivesTests
{
    private static string _dir = null!;

    [ClassInitialize]
    public static void WriteTinyDataSet(TestContext _)
    {
        _dir = TestData.TempDirectory("cli-objectives");
        CliLearningCurveTests.WriteIdx(Path.Combine(_dir, "data"), "train", count: 16, seed: 1);
        CliLearningCurveTests.WriteIdx(Path.Combine(_dir, "data"), "t10k", count: 16, seed: 2);
    }

    [ClassCleanup]
    public static void DeleteTinyDataSet()
    {
        if (_dir != null && Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static string Train(string extra, string name) =>
        $"train --data {_dir}/data --limit 16 --batch-size 8 --base-channels 8 --timesteps 20 --epochs 1 --out {_dir}/{name}.zip {extra}";

    [TestMethod]
    public void FlowMatchingTrainsAndGeneratesWithItsOwnSampler()
    {
        var (code, log) = CliLearningCurveTests.Samples(Train(
            $"--objective flow-matching --offset-noise 0.1 --eval-every 1 --eval-samples 8 --eval-steps 2 --metrics {_dir}/flow/metrics.csv", "flow"));
        Assert.AreEqual(0, code, log);
        // The evaluation sampled with the flow model's own sampler (--eval-sampler defaults to flow-euler for it).
        var evalRow = File.ReadAllLines($"{_dir}/flow/metrics.csv").Single(l => l.StartsWith("eval,")).Split(',');
        CollectionAssert.AreEqual(new[] { "8", "flow-euler", "2" }, new[] { evalRow[8], evalRow[9], evalRow[10] });
        (code, log) = CliLearningCurveTests.Samples(Train("--objective flow-matching --eval-every 1 --eval-sampler ddim --metrics x.csv", "flow-ddim"));
        Assert.AreNotEqual(0, code, log);
        StringAssert.Contains(log, "--eval-sampler ddim");
        using (var model = (DiffusionModel)new MLContext().Model.Load($"{_dir}/flow.zip", out _))
        {
            Assert.AreEqual(DiffusionObjective.FlowMatching, model.Objective);
            Assert.AreEqual(SamplerKind.FlowMatchEuler, model.DefaultSampler.Sampler);
            Assert.AreEqual(2L, model.Config.TrainedSteps);
        }

        (code, log) = CliLearningCurveTests.Samples($"generate --model {_dir}/flow.zip --count 2 --steps 3 --out {_dir}/flow.png");
        Assert.AreEqual(0, code, log);
        Assert.IsTrue(File.Exists($"{_dir}/flow.png"));
        (code, log) = CliLearningCurveTests.Samples($"generate --model {_dir}/flow.zip --count 2 --steps 3 --sampler flow-heun --out {_dir}/heun.png");
        Assert.AreEqual(0, code, log);
        (code, log) = CliLearningCurveTests.Samples($"generate --model {_dir}/flow.zip --count 2 --steps 3 --sampler ddim --out {_dir}/ddim.png");
        Assert.AreNotEqual(0, code, log);
        StringAssert.Contains(log, "Ddim");
        StringAssert.Contains(log, "FlowMatching");
    }

    [TestMethod]
    public void ZeroTerminalSnrNeedsVPrediction()
    {
        var (code, log) = CliLearningCurveTests.Samples(Train("--rescale-betas-zero-snr", "zero-snr-epsilon"));
        Assert.AreNotEqual(0, code, log);
        StringAssert.Contains(log, "RescaleBetasZeroSnr");
        StringAssert.Contains(log, "VPrediction");
        (code, log) = CliLearningCurveTests.Samples(Train("--rescale-betas-zero-snr --prediction VPrediction", "zero-snr"));
        Assert.AreEqual(0, code, log);
        using var model = (DiffusionModel)new MLContext().Model.Load($"{_dir}/zero-snr.zip", out _);
        Assert.IsTrue(model.Config.RescaleBetasZeroSnr);
        Assert.AreEqual(0.0, model.Schedule.AlphaBars[^1]);
    }

    [TestMethod]
    public void BadObjectiveAndOffsetAreRejectedNamingTheOption()
    {
        var (code, log) = CliLearningCurveTests.Samples(Train("--objective rectified", "bad"));
        Assert.AreNotEqual(0, code, log);
        StringAssert.Contains(log, "--objective");
        (code, log) = CliLearningCurveTests.Samples(Train("--offset-noise -1", "bad"));
        Assert.AreNotEqual(0, code, log);
        StringAssert.Contains(log, "--offset-noise");
    }
}
