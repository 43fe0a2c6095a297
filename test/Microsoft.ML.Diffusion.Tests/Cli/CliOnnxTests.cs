using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.OnnxRuntime;

namespace Microsoft.ML.Diffusion.Tests.Cli;

/// <summary>
/// The CLI's ONNX side: <c>export-onnx</c> writes the networks of a model zip (the bytes of the in-process export, a file ONNX Runtime
/// opens); <c>--engine onnxruntime</c> on generate, inpaint, upscale, demo and evaluate runs the network on ONNX Runtime, with images
/// within 2 grey levels of TorchSharp's; and images generated on ONNX Runtime are bit-identical across processes (two child
/// processes write byte-identical PNGs, whose pixels equal this process's own generation).
/// </summary>
[TestClass]
public sealed class CliOnnxTests
{
    private const int PixelTolerance = 2;
    private static string _dir = null!;

    [ClassInitialize]
    public static void Init(TestContext _) => _dir = TestData.TempDirectory("cli-onnx");

    [ClassCleanup]
    public static void Cleanup()
    {
        if (Directory.Exists(_dir)) Directory.Delete(_dir, recursive: true);
    }

    private static string Bundled(string name) => Path.Combine(Path.GetDirectoryName(CliBadInputTests.BundledModel)!, name);

    /// <summary>Runs the samples app with <paramref name="arguments"/>; exit code and stdout + stderr.</summary>
    internal static (int ExitCode, string Output) Run(params string[] arguments)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Persistence.SamplesApp.Path());
        foreach (var a in arguments) psi.ArgumentList.Add(a);
        psi.Environment["NO_COLOR"] = "1";
        using var child = Process.Start(psi)!;
        var stderr = child.StandardError.ReadToEndAsync();
        string stdout = child.StandardOutput.ReadToEnd();
        if (!child.WaitForExit(300_000))
        {
            child.Kill(entireProcessTree: true);
            Assert.Fail($"'{string.Join(' ', arguments)}' ran for more than five minutes");
        }
        return (child.ExitCode, stdout + stderr.Result);
    }

    internal static void RunOk(params string[] arguments)
    {
        var (code, log) = Run(arguments);
        Assert.AreEqual(0, code, $"{string.Join(' ', arguments)}:\n{log}");
    }

    private static byte[] Pixels(string png)
    {
        using var image = MLImage.CreateFromFile(png);
        return image.Pixels.ToArray();
    }

    private static int MaxDifference(byte[] a, byte[] b)
    {
        Assert.AreEqual(a.Length, b.Length, "image sizes");
        return a.Zip(b, (p, q) => Math.Abs(p - q)).Max();
    }

    [TestMethod]
    public void ExportOnnxWritesTheInProcessExport()
    {
        string onnx = Path.Combine(_dir, "ddpm.onnx");
        RunOk("export-onnx", "--model", CliBadInputTests.BundledModel, "--out", onnx);
        using (var model = new MLContext().Generative.LoadDiffusionModel(CliBadInputTests.BundledModel))
        using (var stream = new MemoryStream())
        {
            model.ExportOnnx(stream);
            CollectionAssert.AreEqual(stream.ToArray(), File.ReadAllBytes(onnx), "the CLI writes the library's export");
        }
        using (var session = new InferenceSession(onnx))
        {
            Assert.AreEqual("diffusion_unet", session.ModelMetadata.CustomMetadataMap["model_kind"]);
            CollectionAssert.AreEquivalent(new[] { "x_t", "t" }, session.InputMetadata.Keys.ToArray());
        }

        string classifier = Path.Combine(_dir, "classifier.onnx");
        RunOk("export-onnx", "--model", Bundled("fashion-mnist-noisy-classifier.zip"), "--out", classifier);
        using (var session = new InferenceSession(classifier))
            Assert.AreEqual("noisy_classifier", session.ModelMetadata.CustomMetadataMap["model_kind"]);
        string unet = Path.Combine(_dir, "unet-only.onnx");
        RunOk("export-onnx", "--model", CliBadInputTests.BundledModel, "--out", unet, "--network", "unet");
        CollectionAssert.AreEqual(File.ReadAllBytes(onnx), File.ReadAllBytes(unet));
        Assert.IsFalse(File.Exists(Path.Combine(_dir, "ddpm.decoder.onnx")), "a pixel-space model has no decoder");
    }

    /// <summary>
    /// ONNX Runtime's images are bit-identical across processes: two child processes write byte-identical PNGs whose pixels equal
    /// this process's generation with the same options; TorchSharp's grid is within 2 grey levels.
    /// </summary>
    [TestMethod]
    public void GenerateOnOnnxRuntimeIsBitIdenticalAcrossProcesses()
    {
        string[] Args(string engine, string png) =>
            new[] { "generate", "--model", CliBadInputTests.BundledModel, "--count", "4", "--sampler", "ddpm", "--steps", "5", "--seed", "3", "--engine", engine, "--out", png };
        string a = Path.Combine(_dir, "ort-a.png"), b = Path.Combine(_dir, "ort-b.png"), torch = Path.Combine(_dir, "torch.png");
        RunOk(Args("onnxruntime", a));
        RunOk(Args("onnxruntime", b));
        RunOk(Args("torchsharp", torch));
        CollectionAssert.AreEqual(File.ReadAllBytes(a), File.ReadAllBytes(b), "two processes wrote different PNG bytes");

        using var model = new MLContext().Generative.LoadDiffusionModel(CliBadInputTests.BundledModel);
        var images = model.Generate(4, new SamplerOptions { Sampler = SamplerKind.Ddpm, Steps = 5, Seed = 3, Engine = InferenceEngine.OnnxRuntime });
        using var grid = ImageGrid.Create(images);
        CollectionAssert.AreEqual(grid.Pixels.ToArray(), Pixels(a), "this process's ONNX Runtime images differ from the child's");
        foreach (var image in images) image.Dispose();

        int diff = MaxDifference(Pixels(a), Pixels(torch));
        Console.WriteLine($"generate: max pixel difference ONNX Runtime vs TorchSharp = {diff}");
        Assert.IsTrue(diff <= PixelTolerance, $"max pixel difference {diff}");
    }

    [TestMethod]
    [DataRow("inpaint")]
    [DataRow("upscale")]
    public void TransformCommandsTakeTheEngine(string command)
    {
        string onnx = Path.Combine(_dir, command + "-ort.png"), torch = Path.Combine(_dir, command + "-torch.png");
        string[] Args(string engine, string png) => new[] { command, "--steps", "4", "--jump", "2", "--resamplings", "2", "--engine", engine, "--out", png };
        RunOk(Args("onnxruntime", onnx));
        RunOk(Args("torchsharp", torch));
        int diff = MaxDifference(Pixels(onnx), Pixels(torch));
        Console.WriteLine($"{command}: max pixel difference ONNX Runtime vs TorchSharp = {diff}");
        Assert.IsTrue(diff <= PixelTolerance, $"max pixel difference {diff}");
    }

    [TestMethod]
    public void DemoTakesTheEngine()
    {
        string outDir = Path.Combine(_dir, "demo-ort");
        var (code, log) = Run("demo", "--engine", "onnxruntime", "--out", outDir);
        Assert.AreEqual(0, code, log);
        StringAssert.Contains(log, "OnnxRuntime");
        foreach (var png in new[] { "generated.png", "inpainted.png", "upscaled.png" })
            Assert.IsTrue(File.Exists(Path.Combine(outDir, png)), $"{png}\n{log}");
    }

    [TestMethod]
    public void EvaluateTakesTheEngine()
    {
        string json = Path.Combine(_dir, "evaluate.json");
        RunOk("evaluate", "--count", "2", "--steps", "2", "--engine", "onnxruntime", "--json", json);
        var doc = JsonNode.Parse(File.ReadAllText(json))!;
        Assert.AreEqual("OnnxRuntime", doc["engine"]!.GetValue<string>());
    }

    /// <summary>bench (one tiny round, no PyTorch, no demo grid) reports the ONNX Runtime step at the batch and at batch 1.</summary>
    [TestMethod]
    public void BenchReportsTheOnnxRuntimeStep()
    {
        string json = Path.Combine(_dir, "bench.json");
        RunOk("bench", "--runs", "1", "--iterations", "1", "--batch-size", "2", "--threads", "1", "--no-pytorch", "--no-demo", "--json", json);
        var doc = JsonNode.Parse(File.ReadAllText(json))!;
        double ort = doc["step_img_per_s.onnxruntime"]!.GetValue<double>();
        Assert.IsTrue(ort > 0, $"step_img_per_s.onnxruntime = {ort}");
        var step = doc["step_img_per_s"]!;
        Assert.AreEqual(ort, step["onnxruntime"]!.GetValue<double>());
        Assert.AreEqual(Math.Round(ort / step["torchsharp"]!.GetValue<double>(), 3), step["onnxruntime_vs_torchsharp"]!.GetValue<double>(), 0.002);
        var b1 = doc["step_b1_img_per_s"]!;
        Assert.IsTrue(b1["torchsharp"]!.GetValue<double>() > 0 && b1["onnxruntime"]!.GetValue<double>() > 0, b1.ToJsonString());
        Assert.IsNull(doc["demo_grid_seconds"], "--no-demo skips the grid");
    }

    [TestMethod]
    public void HelpListsTheEngineOption()
    {
        foreach (var command in new[] { "generate", "inpaint", "upscale", "demo", "evaluate" })
        {
            var (code, output) = Run(command, "--help");
            Assert.AreEqual(0, code, output);
            StringAssert.Contains(output, "--engine", command);
            StringAssert.Contains(output, "onnxruntime", command);
        }
        var (exit, help) = Run("export-onnx", "--help");
        Assert.AreEqual(0, exit, help);
        StringAssert.Contains(help, "--network");
    }
}
