using System.IO.Compression;
using System.Text;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Tests.Reliability;
using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Transforms;

namespace Microsoft.ML.Diffusion.Tests.Schedules;

/// <summary>
/// Zero terminal SNR (Lin et al. 2024, Algorithm 1; diffusers' rescale_betas_zero_snr): the schedule against a float64 recomputation of
/// the algorithm, SNR(T) = 0, every sampler finite on a tiny v-prediction model, the option saved with the model, and its errors.
/// </summary>
[TestClass]
public class ZeroTerminalSnrTests
{
    private static TestModel _fixture = null!;

    [ClassInitialize]
    public static void Fit(TestContext _) => _fixture = TestModel.Train("zero-snr", steps: 2, o =>
    {
        o.RescaleBetasZeroSnr = true;
        o.Prediction = PredictionType.VPrediction;
    });

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    /// <summary>Lin et al. 2024, Algorithm 1, line by line in float64 (numpy's cumprod, sqrt, shift, scale, square, ratios).</summary>
    private static double[] ReferenceRescale(double[] betas)
    {
        int n = betas.Length;
        var alphasBarSqrt = ReferenceSchedules.AlphaBars(betas).Select(Math.Sqrt).ToArray();
        double a0 = alphasBarSqrt[0], aT = alphasBarSqrt[n - 1];
        for (int i = 0; i < n; i++) alphasBarSqrt[i] -= aT;
        for (int i = 0; i < n; i++) alphasBarSqrt[i] *= a0 / (a0 - aT);
        var alphasBar = alphasBarSqrt.Select(a => a * a).ToArray();
        var alphas = new double[n];
        alphas[0] = alphasBar[0];
        for (int i = 1; i < n; i++) alphas[i] = alphasBar[i] / alphasBar[i - 1];
        return alphas.Select(a => 1 - a).ToArray();
    }

    [TestMethod]
    [DataRow(NoiseSchedule.Linear, 1000)]
    [DataRow(NoiseSchedule.Cosine, 1000)]
    [DataRow(NoiseSchedule.Linear, 50)]
    public void TheScheduleIsAlgorithm1(NoiseSchedule kind, int T)
    {
        var plain = new DiffusionSchedule(kind, T);
        var rescaled = new DiffusionSchedule(kind, T, rescaleZeroTerminalSnr: true);
        var original = kind == NoiseSchedule.Linear ? ReferenceSchedules.LinearBetas(T) : ReferenceSchedules.CosineBetas(T);
        var expected = ReferenceRescale(original);
        for (int t = 0; t < T; t++)
            Assert.AreEqual(expected[t], rescaled.Betas[t], 1e-12 * Math.Max(1, expected[t]), $"beta at t = {t}");
        var expectedAlphaBars = ReferenceSchedules.AlphaBars(expected);
        for (int t = 0; t < T; t++)
            Assert.AreEqual(expectedAlphaBars[t], rescaled.AlphaBars[t], 1e-12, $"alpha_bar at t = {t}");

        // SNR(T) = alpha_bar_T / (1 - alpha_bar_T) = 0 exactly: the last beta is 1.
        Assert.AreEqual(0.0, rescaled.AlphaBars[T - 1]);
        Assert.AreEqual(1.0, rescaled.Betas[T - 1]);
        // The first alpha_bar is unchanged (up to rounding of the shift and scale).
        Assert.AreEqual(plain.AlphaBars[0], rescaled.AlphaBars[0], 1e-15);
        Assert.IsTrue(rescaled.ZeroTerminalSnr);
        Assert.IsFalse(plain.ZeroTerminalSnr);
        // Strictly decreasing, so every other beta stays in (0, 1).
        for (int t = 1; t < T; t++) Assert.IsLessThan(rescaled.AlphaBars[t - 1], rescaled.AlphaBars[t]);
    }

    [TestMethod]
    public void SamplersSeeTwoToTheMinus24AtTheLastTimestep()
    {
        var rescaled = new DiffusionSchedule(NoiseSchedule.Linear, 1000, rescaleZeroTerminalSnr: true);
        Assert.AreEqual(Math.Pow(2, -24), rescaled.SolverAlphaBar(999));
        Assert.AreEqual(rescaled.AlphaBars[998], rescaled.SolverAlphaBar(998));
        var sigmas = SigmaSpace.TrainingSigmas(rescaled);
        Assert.AreEqual(Math.Sqrt((1 - Math.Pow(2, -24)) / Math.Pow(2, -24)), sigmas[^1], 1e-9);   // 4096, not infinity
        // A schedule that is not rescaled keeps its tiny last alpha_bar (cosine: about 2e-9 < 2^-24).
        var cosine = new DiffusionSchedule(NoiseSchedule.Cosine, 1000);
        Assert.AreEqual(cosine.AlphaBars[999], cosine.SolverAlphaBar(999));
    }

    [TestMethod]
    public void OneTimestepCannotBeRescaled()
    {
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new DiffusionSchedule(NoiseSchedule.Linear, 1, rescaleZeroTerminalSnr: true));
        StringAssert.Contains(e.Message, "at least 2 timesteps");
    }

    [TestMethod]
    public void EpsilonPredictionIsRejectedNamingTheOption()
    {
        var ml = new MLContext(seed: 1);
        var options = TestData.TinyOptions();
        options.RescaleBetasZeroSnr = true;
        var e = Assert.ThrowsExactly<ArgumentException>(() => ml.Generative.Diffusion(options));
        StringAssert.Contains(e.Message, "RescaleBetasZeroSnr");
        StringAssert.Contains(e.Message, "VPrediction");
        options.Prediction = PredictionType.Sample;                        // x_0 prediction is well-posed at alpha_bar_T = 0
        Assert.IsNotNull(ml.Generative.Diffusion(options));
    }

    [TestMethod]
    public void EverySamplerStaysFinite()
    {
        var model = _fixture.Model;
        Assert.IsTrue(model.Config.RescaleBetasZeroSnr);
        Assert.IsTrue(model.Schedule.ZeroTerminalSnr);
        var seeds = new uint[] { 1, 2 };
        foreach (var row in SamplerRegistry.All.Where(r => r.Objective == DiffusionObjective.Ddpm))
        {
            foreach (var spacing in new TimestepSpacing?[] { null, TimestepSpacing.Trailing })
            {
                var options = new SamplerOptions { Sampler = row.Kind, Steps = Math.Min(6, row.DefaultSteps(model.Timesteps)), Spacing = spacing, Seed = 4 };
                using var images = model.GenerateTensor(seeds, options);
                using var finite = images.isfinite().all();
                Assert.IsTrue(finite.item<bool>(), $"{row.DisplayName}, spacing {spacing?.ToString() ?? "default"}: non-finite pixels");
            }
        }
    }

    [TestMethod]
    public void RePaintStaysFiniteAndKeepsTheKnownPixels()
    {
        // RePaint jumps back up to the noisiest level (alpha_bar_T = 0) and denoises from there with DDPM.
        using var known = TestData.SquaresTensor(2);
        using var mask = ones(2, 1, 8, 8);
        mask.narrow(3, 4, 4).fill_(0);                                   // the right half is unknown
        var options = new InpaintOptions { Steps = 50, JumpLength = 5, Resamplings = 2 };
        using var filled = RePaintRunner.Run(_fixture.Model, options, known, mask, new uint[] { 1, 2 });
        Assert.IsTrue(filled.isfinite().all().item<bool>());
        using var keptError = ((filled - known) * mask).abs().max();
        Assert.AreEqual(0.0, keptError.item<float>(), 1e-6);
    }

    [TestMethod]
    public void TheFirstTrailingStepSeesPureNoise()
    {
        // Trailing spacing starts at t = T - 1, where alpha_bar = 0: DDIM's x_0 estimate there is -v (x_0 = sqrt(abar) x_t - sqrt(1 - abar) v).
        var scheduler = SchedulerFactory.Create(_fixture.Model.Schedule, new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 5, Spacing = TimestepSpacing.Trailing },
            PredictionType.VPrediction);
        Assert.AreEqual(_fixture.Model.Timesteps - 1, scheduler.Timesteps[0]);
        using var x = randn(1, 1, 8, 8, generator: new TorchSharp.torch.Generator(2));
        using var v = randn(1, 1, 8, 8, generator: new TorchSharp.torch.Generator(3));
        var output = scheduler.StepAt(0, v, x);
        using var prev = output.PrevSample;
        using var x0 = output.PredictedX0;
        using var expected = (-v).clamp(-1, 1);                            // clip_sample is on by default
        Assert.AreEqual(0.0, (x0 - expected).abs().max().item<float>(), 1e-6);
    }

    [TestMethod]
    public void SaveAndLoadKeepTheRescaledSchedule()
    {
        string path = Path.Combine(_fixture.Directory, "zero-snr.zip");
        _fixture.Ml.Model.Save(_fixture.Model, _fixture.Data.Schema, path);
        using var loaded = (DiffusionModel)new MLContext().Model.Load(path, out _);
        Assert.IsTrue(loaded.Config.RescaleBetasZeroSnr);
        CollectionAssert.AreEqual(_fixture.Model.Schedule.Betas, loaded.Schedule.Betas);
        var options = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 5, Spacing = TimestepSpacing.Trailing, Seed = 7 };
        using var before = _fixture.Model.GenerateTensor(new uint[] { 7, 8 }, options);
        using var after = loaded.GenerateTensor(new uint[] { 7, 8 }, options);
        Assert.IsTrue(before.equal(after).all().item<bool>(), "identical samples after a round trip");
        // Written as format 1.3, so a release that would ignore the option refuses the file.
        byte[] key = ModelKey(path);
        Assert.AreEqual(0x00010003u, BitConverter.ToUInt32(key, 0x48));
        Assert.AreEqual(0x00010003u, BitConverter.ToUInt32(key, 0x4C));
    }

    [TestMethod]
    public void OldFilesLoadWithoutRescaling()
    {
        // A model saved without the option: format 1.1 and no RescaleBetasZeroSnr in its config, as before the option existed.
        using var plain = TestModel.Shared("zero-snr-plain");
        string path = Path.Combine(_fixture.Directory, "plain.zip");
        plain.Ml.Model.Save(plain.Model, plain.Data.Schema, path);
        byte[] key = ModelKey(path);
        Assert.AreEqual(0x00010001u, BitConverter.ToUInt32(key, 0x48));
        StringAssert.DoesNotMatch(Encoding.UTF8.GetString(key), new System.Text.RegularExpressions.Regex("RescaleBetasZeroSnr"));
        using var loaded = (DiffusionModel)new MLContext().Model.Load(path, out _);
        Assert.IsFalse(loaded.Config.RescaleBetasZeroSnr);
        Assert.IsFalse(loaded.Schedule.ZeroTerminalSnr);

        // The zero-SNR model's config under a 1.1 header is a forged file: refused, naming the option.
        string zeroSnr = Path.Combine(_fixture.Directory, "zero-snr-forged.zip");
        _fixture.Ml.Model.Save(_fixture.Model, _fixture.Data.Schema, zeroSnr);
        var forged = ReliabilityKit.ChangeEntry(File.ReadAllBytes(zeroSnr), "Model.key", k => ReliabilityKit.ChangeVersion(k, 0x00010001, 0x00010001));
        string forgedPath = Path.Combine(_fixture.Directory, "forged.zip");
        File.WriteAllBytes(forgedPath, forged);
        var e = Assert.Throws<Exception>(() => new MLContext().Model.Load(forgedPath, out _));
        StringAssert.Contains(Flatten(e), "RescaleBetasZeroSnr");
    }

    [TestMethod]
    public void ClassifierGuidanceIsRefused()
    {
        var ml = new MLContext(seed: 1);
        var e = Assert.ThrowsExactly<NotSupportedException>(() => ml.Generative.NoisyClassifier(new NoisyClassifierTrainer.Options { DiffusionModel = _fixture.Model }));
        StringAssert.Contains(e.Message, "RescaleBetasZeroSnr");
    }

    private static string Flatten(Exception e) => e.InnerException is null ? e.Message : e.Message + " | " + Flatten(e.InnerException);

    private static byte[] ModelKey(string zipPath)
    {
        using var zip = ZipFile.OpenRead(zipPath);
        using var stream = zip.Entries.Single(x => x.FullName.EndsWith("Model.key")).Open();
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }
}
