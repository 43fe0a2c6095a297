using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion.Tests.Cli;

/// <summary>
/// <c>train --metrics/--eval-every</c> and <c>plot</c> (issue 17): the metrics CSV has one row per step and one per evaluation,
/// a resumed run continues it without duplicates, and plot draws it as a PNG of the requested size. The training runs on a
/// tiny Fashion-MNIST-shaped set written here (16 train and 16 test images), with an 8-channel U-Net.
/// </summary>
[TestClass]
public sealed class CliLearningCurveTests
{
    private static string _dir = null!;

    [ClassInitialize]
    public static void WriteTinyDataSet(TestContext _)
    {
        _dir = TestData.TempDirectory("cli-curve");
        foreach (var (split, seed) in new[] { ("train", 1), ("t10k", 2) })
            WriteIdx(Path.Combine(_dir, "data"), split, count: 16, seed);
    }

    [ClassCleanup]
    public static void DeleteTinyDataSet()
    {
        if (_dir != null && Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    [TestMethod]
    public void TrainWritesOneRowPerStepAndEvaluationAndAResumedRunContinuesTheFile()
    {
        string run = Path.Combine(_dir, "run");
        string csv = Path.Combine(run, "metrics.csv");
        string common = $"train --data {_dir}/data --limit 16 --batch-size 8 --base-channels 8 --timesteps 20 --checkpoint-dir {run} " +
                        $"--eval-every 2 --eval-samples 8 --eval-steps 2 --out {run}/model.zip";
        var (code, log) = Samples($"{common} --epochs 2");
        Assert.AreEqual(0, code, log);

        var lines = File.ReadAllLines(csv);
        Assert.AreEqual("kind,step,epoch,loss,learning_rate,images_per_second,frechet_distance,kid,eval_samples,eval_sampler,eval_steps," +
                        "accuracy_guidance_1,accuracy_guidance_3,eval_seconds", lines[0]);
        var rows = lines.Skip(1).Select(l => l.Split(',')).ToArray();
        CollectionAssert.AreEqual(new[] { "step 1 1", "step 2 1", "step 3 2", "step 4 2", "eval 4 2" }, rows.Select(r => $"{r[0]} {r[1]} {r[2]}").ToArray());
        foreach (var r in rows.Take(4))
        {
            Assert.IsTrue(Number(r[3]) > 0, $"loss of step {r[1]}");
            Assert.AreEqual(2e-4, Number(r[4]), 1e-9, $"learning rate of step {r[1]}");
        }
        var eval = rows[4];
        Assert.IsTrue(Number(eval[6]) > 0 && double.IsFinite(Number(eval[6])), $"Frechet distance '{eval[6]}'");
        CollectionAssert.AreEqual(new[] { "8", "ddim", "2" }, new[] { eval[8], eval[9], eval[10] });
        Assert.AreEqual((Number(rows[2][3]) + Number(rows[3][3])) / 2, Number(eval[3]), 1e-6, "an evaluation row's loss is its epoch's mean");
        // The same figure as evaluate gives for the model the run saved (its last epoch's EMA weights).
        (code, log) = Samples($"evaluate --model {run}/model.zip --data {_dir}/data --count 8 --sampler ddim --steps 2 --json {run}/evaluate.json");
        Assert.AreEqual(0, code, log);
        using (var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "evaluate.json"))))
        {
            double fd = json.RootElement.GetProperty("frechet_distance").GetDouble();
            Assert.AreEqual(fd, Number(eval[6]), 1e-6 * fd, "train --eval-every and evaluate measure alike");
        }
        // An 8-column grid of the 8 evaluation images (28-pixel tiles, 2-pixel padding); the curve so far.
        using (var grid = MLImage.CreateFromFile(Path.Combine(run, "grid-epoch-002.png")))
            Assert.AreEqual((8 * 28 + 9 * 2, 28 + 2 * 2), (grid.Width, grid.Height));
        Assert.IsTrue(File.Exists(Path.Combine(run, "learning-curve.png")));
        Assert.IsFalse(File.Exists(Path.Combine(run, "grid-epoch-001.png")), "--eval-every 2 evaluates at epoch 2 only");

        // A later run that was killed after the checkpoint of step 4 had written rows past it; the next run redoes those steps.
        File.AppendAllLines(csv, new[] { "step,5,3,123,0.0002,1.0,,,,,,,,", "step,6,3,456,0.0002,1.0,,,,,,,,", "eval,6,3,789,,,1.5,0.1,8,ddim,2,,,1.0" });
        (code, log) = Samples($"{common} --epochs 3");
        Assert.AreEqual(0, code, log);
        var resumed = File.ReadAllLines(csv).Skip(1).Select(l => l.Split(',')).ToArray();
        CollectionAssert.AreEqual(new[] { "step 1", "step 2", "step 3", "step 4", "eval 4", "step 5", "step 6" },
            resumed.Select(r => $"{r[0]} {r[1]}").ToArray(), "rows past the resumed step are replaced; epoch 3 has no evaluation");
        CollectionAssert.AreEqual(lines.Skip(1).ToArray(), File.ReadAllLines(csv).Skip(1).Take(5).ToArray(), "rows up to the checkpoint are kept as written");
        Assert.IsTrue(resumed.Skip(5).All(r => Number(r[3]) < 10 && r[2] == "3"), "the redone steps' rows are this run's");
    }

    /// <summary><c>--save-milestones</c> keeps the model of each evaluated epoch: the milestone of the last epoch is the saved model,
    /// an evaluation of a milestone gives its row's distance, and without <c>--eval-every</c> the option is refused.</summary>
    [TestMethod]
    public void SaveMilestonesKeepsTheModelOfEachEvaluatedEpoch()
    {
        string run = Path.Combine(_dir, "milestones");
        string common = $"train --data {_dir}/data --limit 16 --batch-size 8 --base-channels 8 --timesteps 20 --epochs 2 --out {run}/model.zip";
        var (code, log) = Samples($"{common} --metrics {run}/metrics.csv --eval-every 1 --eval-samples 8 --eval-steps 2 --save-milestones");
        Assert.AreEqual(0, code, log);
        var evals = File.ReadAllLines(Path.Combine(run, "metrics.csv")).Skip(1).Select(l => l.Split(',')).Where(r => r[0] == "eval").ToArray();
        Assert.AreEqual(2, evals.Length);
        for (int epoch = 1; epoch <= 2; epoch++)
        {
            string milestone = Path.Combine(run, $"model-epoch-{epoch:D3}.zip");
            (code, log) = Samples($"evaluate --model {milestone} --data {_dir}/data --count 8 --sampler ddim --steps 2 --json {run}/e{epoch}.json");
            Assert.AreEqual(0, code, log);
            using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(run, $"e{epoch}.json")));
            double fd = json.RootElement.GetProperty("frechet_distance").GetDouble();
            Assert.AreEqual(Number(evals[epoch - 1][6]), fd, 1e-6 * fd, $"the milestone of epoch {epoch} is the model its evaluation measured");
        }
        CollectionAssert.AreEqual(Weights(Path.Combine(run, "model.zip")), Weights(Path.Combine(run, "model-epoch-002.zip")),
            "the last epoch's milestone holds the final weights");
        CollectionAssert.AreNotEqual(Weights(Path.Combine(run, "model-epoch-001.zip")), Weights(Path.Combine(run, "model-epoch-002.zip")));
        Assert.IsFalse(Directory.EnumerateFiles(run, "*.tmp").Any(), "no temporary file is left");

        (code, log) = Samples($"{common} --save-milestones");
        Assert.AreNotEqual(0, code);
        StringAssert.Contains(log, "--eval-every");
    }

    /// <summary>The bytes of the weights entry of a model zip.</summary>
    private static byte[] Weights(string zip)
    {
        using var archive = System.IO.Compression.ZipFile.OpenRead(zip);
        var entry = archive.Entries.Single(e => e.Name == "TorchWeights.bin");
        using var stream = entry.Open();
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    }

    /// <summary>A class-conditional run also records the classifier's accuracy at guidance 1 and 3 (one image per class here, so
    /// each is a multiple of 1/10) and draws one grid row per class.</summary>
    [TestMethod]
    public void AClassConditionalRunRecordsTheGuidanceAccuracy()
    {
        string run = Path.Combine(_dir, "conditional");
        var (code, log) = Samples($"train --data {_dir}/data --limit 8 --batch-size 8 --base-channels 8 --timesteps 20 --conditional --epochs 1 " +
                                  $"--metrics {run}/metrics.csv --eval-every 1 --eval-samples 2 --eval-steps 1 --eval-per-class 1 --out {run}/model.zip");
        Assert.AreEqual(0, code, log);
        var eval = File.ReadAllLines(Path.Combine(run, "metrics.csv")).Skip(1).Select(l => l.Split(',')).Single(r => r[0] == "eval");
        foreach (var accuracy in new[] { Number(eval[11]), Number(eval[12]) })
        {
            Assert.IsTrue(accuracy >= 0 && accuracy <= 1, $"accuracy {accuracy}");
            Assert.AreEqual(Math.Round(accuracy * 10), accuracy * 10, 1e-9, $"accuracy {accuracy} of 10 images");
        }
        using var grid = MLImage.CreateFromFile(Path.Combine(run, "grid-epoch-001.png"));
        Assert.AreEqual((28 + 2 * 2, 10 * 28 + 11 * 2), (grid.Width, grid.Height), "one row per class, one image each");
    }

    [TestMethod]
    public void PlotWritesAPngOfTheRequestedSize()
    {
        string csv = Path.Combine(_dir, "plot.csv");
        var lines = new List<string> { Header };
        for (int step = 1; step <= 60; step++)
            lines.Add(string.Create(CultureInfo.InvariantCulture, $"step,{step},{(step - 1) / 20 + 1},{1.0 / Math.Sqrt(step):G6},0.0002,90.5,,,,,,,,"));
        lines.Add("eval,20,1,0.3,,,80.5,0.5,500,ddim,50,,,60.0");
        lines.Add("eval,40,2,0.2,,,40.25,0.2,500,ddim,50,,,60.0");
        File.WriteAllLines(csv, lines);
        foreach (var extra in new[] { "", "--log-x --log-y --smooth 5 --title Tiny" })
        {
            string png = Path.Combine(_dir, $"curve{extra.Length}.png");
            var (code, log) = Samples($"plot --metrics {csv} --out {png} --width 640 --height 360 {extra}");
            Assert.AreEqual(0, code, log);
            var bytes = File.ReadAllBytes(png);
            CollectionAssert.AreEqual(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4], "PNG signature");
            Assert.AreEqual(640, BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(16)), "IHDR width");
            Assert.AreEqual(360, BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(20)), "IHDR height");
            using var image = MLImage.CreateFromFile(png);
            Assert.AreEqual((640, 360), (image.Width, image.Height));
            // Not a blank picture: the lines and labels put many grey levels in it.
            Assert.IsGreaterThan(20, image.GetBGRPixels.Distinct().Count());
        }
    }

    internal const string Header = "kind,step,epoch,loss,learning_rate,images_per_second,frechet_distance,kid,eval_samples,eval_sampler,eval_steps," +
                                   "accuracy_guidance_1,accuracy_guidance_3,eval_seconds";

    private static double Number(string text) => double.Parse(text, CultureInfo.InvariantCulture);

    /// <summary>Runs the samples app; exit code and stdout + stderr.</summary>
    internal static (int ExitCode, string Output) Samples(string arguments)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Persistence.SamplesApp.Path());
        foreach (var token in arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries)) psi.ArgumentList.Add(token);
        psi.Environment["NO_COLOR"] = "1";
        using var child = Process.Start(psi)!;
        var stderr = child.StandardError.ReadToEndAsync();
        string stdout = child.StandardOutput.ReadToEnd();
        if (!child.WaitForExit(300_000))
        {
            child.Kill(entireProcessTree: true);
            Assert.Fail($"'{arguments}' ran for more than five minutes");
        }
        return (child.ExitCode, stdout + stderr.Result);
    }

    /// <summary>Writes <paramref name="count"/> 28x28 images (a bright square on black) and labels 0..9 as plain IDX files.</summary>
    internal static void WriteIdx(string directory, string split, int count, int seed)
    {
        Directory.CreateDirectory(directory);
        var rng = new Random(seed);
        var images = new byte[16 + count * 784];
        BinaryPrimitives.WriteInt32BigEndian(images, 0x803);
        BinaryPrimitives.WriteInt32BigEndian(images.AsSpan(4), count);
        BinaryPrimitives.WriteInt32BigEndian(images.AsSpan(8), 28);
        BinaryPrimitives.WriteInt32BigEndian(images.AsSpan(12), 28);
        for (int i = 0; i < count; i++)
        {
            int ox = rng.Next(0, 18), oy = rng.Next(0, 18);
            for (int y = oy; y < oy + 10; y++)
                for (int x = ox; x < ox + 10; x++)
                    images[16 + i * 784 + y * 28 + x] = 230;
        }
        File.WriteAllBytes(Path.Combine(directory, $"{split}-images-idx3-ubyte"), images);
        var labels = new byte[8 + count];
        BinaryPrimitives.WriteInt32BigEndian(labels, 0x801);
        BinaryPrimitives.WriteInt32BigEndian(labels.AsSpan(4), count);
        for (int i = 0; i < count; i++) labels[8 + i] = (byte)(i % 10);
        File.WriteAllBytes(Path.Combine(directory, $"{split}-labels-idx1-ubyte"), labels);
    }
}
