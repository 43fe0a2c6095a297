using System.Diagnostics;
using System.IO.Compression;
using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion.Tests.Cli;

/// <summary>
/// The samples CLI's error contract (issue 15): for any bad argument or file, every command prints one line naming the
/// problem and exits with code 1, without a stack trace. Each case runs the built app in a fresh process and fails before
/// any training or sampling starts.
/// </summary>
[TestClass]
public sealed class CliBadInputTests
{
    private static string _dir = null!;

    /// <summary>Writes the bad files into a temporary folder: truncated zip, foreign zip, text file, images of two sizes.</summary>
    [ClassInitialize]
    public static void CreateBadFiles(TestContext _)
    {
        _dir = Path.Combine(Path.GetTempPath(), "cli-bad-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(_dir);
        var model = File.ReadAllBytes(BundledModel);
        File.WriteAllBytes(Path.Combine(_dir, "truncated.zip"), model[..(model.Length / 3)]);
        using (var zip = ZipFile.Open(Path.Combine(_dir, "foreign.zip"), ZipArchiveMode.Create))
        using (var writer = new StreamWriter(zip.CreateEntry("readme.txt").Open()))
            writer.Write("a zip archive, but not a model");
        File.WriteAllText(Path.Combine(_dir, "notes.txt"), "plain text, not a model or an image\n");
        File.WriteAllText(Path.Combine(_dir, "notes.png"), "plain text named like an image\n");
        SaveWhite(Path.Combine(_dir, "image28.png"), 28);
        SaveWhite(Path.Combine(_dir, "mask10.png"), 10);
        File.WriteAllLines(Path.Combine(_dir, "metrics.csv"), new[] { CliLearningCurveTests.Header, "step,1,1,0.9,0.0002,50,,,,,,,," });
        File.WriteAllLines(Path.Combine(_dir, "garbled.csv"), new[] { CliLearningCurveTests.Header, "step,1,1,0.9,0.0002,50,,,,,,,,", "step,two,1,0.8" });
        File.WriteAllLines(Path.Combine(_dir, "header-only.csv"), new[] { CliLearningCurveTests.Header });
    }

    /// <summary>Deletes the temporary folder.</summary>
    [ClassCleanup]
    public static void DeleteBadFiles()
    {
        if (_dir != null && Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    /// <summary>
    /// Command line (placeholders: {model} the bundled model, {dir} the folder of bad files) and the text the error line must
    /// contain (the option, and the file where one is named).
    /// </summary>
    public static IEnumerable<object[]> Cases => new[]
    {
        // generate
        Case("generate --model {dir}/missing.zip", "--model", "missing.zip"),
        Case("generate --model {dir}/truncated.zip", "--model", "truncated.zip"),
        Case("generate --model {dir}/foreign.zip", "--model", "foreign.zip"),
        Case("generate --model {dir}/notes.txt", "--model", "notes.txt"),
        Case("generate --model {model} --steps 0", "--steps"),
        Case("generate --model {model} --steps -5", "--steps"),
        Case("generate --steps 0", "--model"),                                   // two parse errors: still one line
        Case("generate --model {model} --sampler euler", "--sampler", "euler"),
        Case("generate --model {model} --count 0", "--count"),
        Case("generate --model {model} --classifier {dir}/foreign.zip --label 1", "--classifier", "foreign.zip"),
        Case("generate --model {model} --classifier {model} --label 1", "--classifier", "fashion-mnist-ddpm.zip"),
        Case("generate --model {model} --no-such-option", "--no-such-option"),
        Case("generate", "--model"),
        // inpaint
        Case("inpaint --model {dir}/missing.zip", "--model", "missing.zip"),
        Case("inpaint --model {dir}/truncated.zip", "--model", "truncated.zip"),
        Case("inpaint --model {dir}/foreign.zip", "--model", "foreign.zip"),
        Case("inpaint --model {dir}/notes.txt", "--model", "notes.txt"),
        Case("inpaint --image {dir}/missing.png", "--image", "missing.png"),
        Case("inpaint --image {dir}/notes.png", "--image", "notes.png"),
        Case("inpaint --image {dir}/image28.png --mask {dir}/mask10.png", "--mask", "mask10.png"),
        Case("inpaint --image {dir}/image28.png --mask {dir}/notes.png", "--mask", "notes.png"),
        Case("inpaint --mask no-such-mask", "--mask", "no-such-mask"),
        Case("inpaint --steps 0", "--steps"),
        Case("inpaint --steps -1", "--steps"),
        Case("inpaint --jump 0", "--jump"),
        // upscale
        Case("upscale --model {dir}/truncated.zip", "--model", "truncated.zip"),
        Case("upscale --model {dir}/foreign.zip", "--model", "foreign.zip"),
        Case("upscale --image {dir}/missing.png", "--image", "missing.png"),
        Case("upscale --image {dir}/notes.png", "--image", "notes.png"),
        Case("upscale --factor 3", "--factor"),
        Case("upscale --steps 0", "--steps"),
        // img2img
        Case("img2img --model {dir}/missing.zip", "--model", "missing.zip"),
        Case("img2img --model {dir}/truncated.zip", "--model", "truncated.zip"),
        Case("img2img --model {dir}/foreign.zip", "--model", "foreign.zip"),
        Case("img2img --input {dir}/missing.png", "--input", "missing.png"),
        Case("img2img --input {dir}/notes.png", "--input", "notes.png"),
        Case("img2img --strength 1.5", "--strength", "[0, 1]"),
        Case("img2img --strength -0.1", "--strength", "[0, 1]"),
        Case("img2img --strength NaN", "--strength"),
        Case("img2img --steps 0", "--steps"),
        Case("img2img --sampler euler", "--sampler", "euler"),
        Case("img2img --label 3", "--label"),
        Case("img2img --guidance 2", "--guidance"),
        // demo
        Case("demo --model {dir}/missing.zip", "--model", "missing.zip"),
        Case("demo --model {dir}/truncated.zip", "--model", "truncated.zip"),
        Case("demo --model {dir}/foreign.zip", "--model", "foreign.zip"),
        Case("demo --model {dir}/notes.txt", "--model", "notes.txt"),
        // evaluate
        Case("evaluate --model {dir}/missing.zip", "--model", "missing.zip"),
        Case("evaluate --model {dir}/truncated.zip", "--model", "truncated.zip"),
        Case("evaluate --model {dir}/foreign.zip", "--model", "foreign.zip"),
        Case("evaluate --classifier {dir}/notes.txt", "--classifier", "notes.txt"),
        Case("evaluate --classifier {dir}/missing.bin", "--classifier", "missing.bin"),
        Case("evaluate --data {dir}/no-data", "--data", "no-data"),
        Case("evaluate --count 1", "--count"),
        Case("evaluate --steps 0", "--steps"),
        Case("evaluate --sampler euler", "--sampler", "euler"),
        // evaluate-inpaint
        Case("evaluate-inpaint --model {dir}/truncated.zip", "--model", "truncated.zip"),
        Case("evaluate-inpaint --model {dir}/notes.txt", "--model", "notes.txt"),
        Case("evaluate-inpaint --data {dir}/no-data", "--data", "no-data"),
        Case("evaluate-inpaint --steps 0", "--steps"),
        Case("evaluate-inpaint --count -3", "--count"),
        // evaluate-guidance
        Case("evaluate-guidance --model {dir}/missing.zip", "--model", "missing.zip"),
        Case("evaluate-guidance --model {dir}/foreign.zip", "--model", "foreign.zip"),
        Case("evaluate-guidance --model {model}", "--model", "fashion-mnist-ddpm.zip"),
        Case("evaluate-guidance --noisy-classifier {dir}/truncated.zip", "--noisy-classifier", "truncated.zip"),
        Case("evaluate-guidance --noisy-classifier {dir}/missing.zip", "--noisy-classifier", "missing.zip"),
        Case("evaluate-guidance --model {model} --guidance a,b", "--guidance"),
        Case("evaluate-guidance --model {model} --per-class 0", "--per-class"),
        Case("evaluate-guidance --model {model} --steps -1", "--steps"),
        Case("evaluate-guidance --model {model} --sampler euler", "--sampler", "euler"),
        // training commands
        Case("train --data {dir}/no-data", "--data", "no-data"),
        Case("train --epochs 0", "--epochs"),
        Case("train --lr-decay-steps -5", "--lr-decay-steps", "-5"),
        Case("train --lr-schedule Cosine --lr-decay-steps 100", "--lr-decay-steps", "--lr-schedule is Cosine"),
        Case("train --batch-size -1", "--batch-size"),
        Case("train --super-resolution 3", "--super-resolution"),
        Case("train --eval-every 0", "--eval-every"),
        Case("train --eval-every 1", "--eval-every", "--metrics"),                   // nowhere to write the figures
        Case("train --eval-sampler euler --metrics {dir}/m.csv", "--eval-sampler", "euler"),
        Case("train --eval-samples 1", "--eval-samples"),
        Case("train --metrics {dir}/notes.txt", "--metrics", "notes.txt"),           // an existing file that is not a metrics CSV
        Case("train --metrics {dir}/garbled.csv", "--metrics", "garbled.csv", "line 3"),
        Case("train --metrics {dir}/notes.txt/metrics.csv", "--metrics", "metrics.csv"),   // its folder is a file: cannot be written
        Case("train --metrics {dir}/m.csv --eval-every 1 --classifier {dir}/notes.txt", "--classifier", "notes.txt"),
        // plot
        Case("plot", "--metrics"),
        Case("plot --metrics {dir}/missing.csv", "--metrics", "missing.csv"),
        Case("plot --metrics {dir}/notes.txt", "--metrics", "notes.txt"),
        Case("plot --metrics {dir}/garbled.csv", "--metrics", "garbled.csv", "line 3"),
        Case("plot --metrics {dir}/header-only.csv", "--metrics", "header-only.csv", "nothing to plot"),
        Case("plot --metrics {dir}/metrics.csv --out {dir}/notes.txt/curve.png", "--out", "curve.png"),
        Case("plot --metrics {dir}/metrics.csv --width 0", "--width"),
        Case("plot --metrics {dir}/metrics.csv --smooth 0", "--smooth"),
        Case("train-classifier --data {dir}/no-data", "--data", "no-data"),
        Case("train-classifier --epochs 0", "--epochs"),
        Case("train-latent --data {dir}/no-data", "--data", "no-data"),
        Case("train-latent --factor 3", "--factor"),
        Case("train-noisy-classifier --model {dir}/truncated.zip", "--model", "truncated.zip"),
        Case("train-noisy-classifier --model {dir}/foreign.zip", "--model", "foreign.zip"),
        Case("train-noisy-classifier --data {dir}/no-data", "--data", "no-data"),
        Case("train-noisy-classifier --max-steps 0", "--max-steps"),
        Case("train-synthetic --count 0", "--count"),
        Case("train-synthetic --max-steps -1", "--max-steps"),
        // export-onnx, --engine
        Case("export-onnx --model {dir}/missing.zip --out {dir}/x.onnx", "--model", "missing.zip"),
        Case("export-onnx --model {dir}/truncated.zip --out {dir}/x.onnx", "--model", "truncated.zip"),
        Case("export-onnx --model {dir}/foreign.zip --out {dir}/x.onnx", "--model", "foreign.zip"),
        Case("export-onnx --model {dir}/notes.txt --out {dir}/x.onnx", "--model", "notes.txt"),
        Case("export-onnx --model {model} --out {dir}/x.txt", "--out", "x.txt", ".onnx"),
        Case("export-onnx --model {model} --out {dir}/x.onnx --network decoder", "--network decoder", "pixel-space", "auto or unet"),
        Case("export-onnx --model {model} --out {dir}/x.onnx --network gpu", "--network", "gpu"),
        Case("export-onnx --out {dir}/x.onnx", "--model"),
        Case("generate --model {model} --engine bogus", "--engine", "bogus"),
        Case("inpaint --engine cuda", "--engine", "cuda"),
        Case("upscale --engine bogus", "--engine", "bogus"),
        Case("demo --engine bogus", "--engine", "bogus"),
        Case("evaluate --engine bogus", "--engine", "bogus"),
        // soak, bench
        Case("soak --train-steps 0", "--train-steps"),
        Case("soak --sampling-steps -1", "--sampling-steps"),
        Case("bench --runs 0", "--runs"),
        Case("bench --threads 0", "--threads"),
        // no command
        Case("no-such-command", "no-such-command"),
    };

    /// <summary>Every bad input: exit code 1 and one line "error: ..." naming the option (and file), no stack trace.</summary>
    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void BadInputGivesOneLineAndExitCode1(string arguments, string[] expected)
    {
        var (exitCode, output) = Run(arguments);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Where(l => l.Length > 0).ToArray();
        Assert.AreEqual(1, exitCode, $"exit code of '{arguments}':\n{output}");
        Assert.IsFalse(output.Contains("   at ", StringComparison.Ordinal), $"stack trace from '{arguments}':\n{output}");
        Assert.HasCount(1, lines, $"'{arguments}' should print exactly one line:\n{output}");
        StringAssert.StartsWith(lines[0], "error: ", $"'{arguments}'");
        foreach (var text in expected)
            StringAssert.Contains(lines[0], text, $"the error line of '{arguments}' should name {text}");
    }

    /// <summary><c>--verbose</c> adds the full exception, stack trace included, after the one line.</summary>
    [TestMethod]
    public void VerboseShowsTheStackTrace()
    {
        var (exitCode, output) = Run("generate --model {dir}/truncated.zip --verbose");
        Assert.AreEqual(1, exitCode, output);
        StringAssert.StartsWith(output, "error: --model");
        StringAssert.Contains(output, "   at ");
    }

    /// <summary>inpaint --mask FILE.png of the image's size fills the black part (it crashed with "Object is disposed").</summary>
    [TestMethod]
    public void InpaintWithAMaskFileWritesTheResult()
    {
        string output = Path.Combine(_dir, "inpainted.png");
        var (exitCode, log) = Run($"inpaint --image {{dir}}/image28.png --mask {{dir}}/image28.png --steps 2 --jump 1 --resamplings 1 --out \"{output}\"");
        Assert.AreEqual(0, exitCode, log);
        Assert.IsTrue(File.Exists(output), log);
    }

    private static object[] Case(string arguments, params string[] expected) => new object[] { arguments, expected };

    /// <summary>The bundled unconditional model's zip in this repository.</summary>
    internal static string BundledModel
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir != null && !File.Exists(Path.Combine(dir.FullName, "Diffusion.MLNet.sln"))) dir = dir.Parent;
            Assert.IsNotNull(dir, "repository root not found above " + AppContext.BaseDirectory);
            return Path.Combine(dir.FullName, "src", "Samples", "Models", "fashion-mnist-ddpm.zip");
        }
    }

    /// <summary>Runs the samples app with <paramref name="arguments"/> ({model} and {dir} filled in); stdout and stderr together.</summary>
    private static (int ExitCode, string Output) Run(string arguments)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Persistence.SamplesApp.Path());
        foreach (var token in arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            psi.ArgumentList.Add(token.Replace("{model}", BundledModel).Replace("{dir}", _dir).Trim('"'));
        psi.Environment["NO_COLOR"] = "1";
        using var child = Process.Start(psi)!;
        var stderr = child.StandardError.ReadToEndAsync();
        string stdout = child.StandardOutput.ReadToEnd();
        if (!child.WaitForExit(60_000))
        {
            child.Kill(entireProcessTree: true);
            Assert.Fail($"'{arguments}' ran for more than a minute (it should fail at once)");
        }
        return (child.ExitCode, stdout + stderr.Result);
    }

    private static void SaveWhite(string path, int size)
    {
        var pixels = Enumerable.Repeat((byte)255, 4 * size * size).ToArray();
        using var image = MLImage.CreateFromPixels(size, size, MLPixelFormat.Bgra32, pixels);
        image.Save(path);
    }
}
