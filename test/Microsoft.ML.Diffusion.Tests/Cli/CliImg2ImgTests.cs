using System.Diagnostics;
using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion.Tests.Cli;

/// <summary><c>img2img</c>: a fresh process loads the model zip and writes the same pixels as mlContext.Generative.ImageToImage in this
/// one; a wrong-sized input is resized; --side-by-side writes input and result enlarged.</summary>
[TestClass]
public sealed class CliImg2ImgTests
{
    private static string ImagesDirectory => Path.Combine(Path.GetDirectoryName(CliBadInputTests.BundledModel)!, "..", "Images");

    private static (int ExitCode, string Output) Run(params string[] arguments)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Persistence.SamplesApp.Path());
        psi.ArgumentList.Add("img2img");
        foreach (var a in arguments) psi.ArgumentList.Add(a);
        psi.Environment["NO_COLOR"] = "1";
        using var child = Process.Start(psi)!;
        var stderr = child.StandardError.ReadToEndAsync();
        string stdout = child.StandardOutput.ReadToEnd();
        Assert.IsTrue(child.WaitForExit(120_000), "img2img ran for more than two minutes");
        return (child.ExitCode, stdout + stderr.Result);
    }

    [TestMethod]
    public void FreshProcess_WritesTheSamePixelsAsTheTransform()
    {
        string dir = TestData.TempDirectory("cli-img2img");
        try
        {
            string png = Path.Combine(dir, "out.png");
            var (exitCode, log) = Run("--model", CliBadInputTests.BundledModel, "--input", Path.Combine(ImagesDirectory, "coat.png"),
                "--strength", "0.6", "--sampler", "ddim", "--steps", "5", "--seed", "3", "--out", png);
            Assert.AreEqual(0, exitCode, log);
            StringAssert.Contains(log, "3 of 5 steps");

            // In this process: LoadImages -> ResizeImages -> ConvertToGrayscale -> ImageToImage with the same settings.
            var ml = new MLContext(seed: 1);
            using var model = ml.Generative.LoadDiffusionModel(CliBadInputTests.BundledModel);
            var sampler = model.DefaultSampler;
            sampler.Sampler = SamplerKind.Ddim;
            sampler.Steps = 5;
            sampler.Seed = 3;
            var data = ml.Data.LoadFromEnumerable(new[] { new PathRow { Path = "coat.png" } });
            var pipeline = ml.Transforms.LoadImages("Image", ImagesDirectory, "Path")
                .Append(ml.Transforms.ResizeImages("Image", 28, 28))
                .Append(ml.Transforms.ConvertToGrayscale("Image"))
                .Append(ml.Generative.ImageToImage(model, "Edited", "Image", new ImageToImageOptions { Strength = 0.6f, Sampler = sampler }));
            var expected = pipeline.Fit(data).Transform(data).GetColumn<MLImage>("Edited").Single();
            using var written = MLImage.CreateFromFile(png);
            Assert.AreEqual(28, written.Width);
            CollectionAssert.AreEqual(expected.GetBGRPixels, written.GetBGRPixels, "the other process translated to different pixels");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>An SdeditTransformer saved with mlContext.Model.Save loads in a fresh process (its diffusion model's weights inside) and
    /// translates to the pixels it gives here.</summary>
    [TestMethod]
    public void SavedTransformer_LoadsInAFreshProcess()
    {
        using var fixture = TestModel.Shared("cli-img2img-saved");
        var ml = fixture.Ml;
        var sampler = fixture.Model.DefaultSampler;
        sampler.Steps = 6;
        sampler.Seed = 3;
        var transformer = ml.Generative.ImageToImage(fixture.Model, "Edited", "Image", new ImageToImageOptions { Strength = 0.5f, Sampler = sampler })
            .Fit(fixture.Data);
        string zip = Path.Combine(fixture.Directory, "sdedit.zip");
        ml.Model.Save(transformer, fixture.Data.Schema, zip);
        string input = Path.Combine(fixture.Directory, "square.png");
        TestData.Squares(1, seed: 4).Single().Image.Save(input);

        var files = ml.Data.LoadFromEnumerable(new[] { new PathRow { Path = "square.png" } });
        var images = ml.Transforms.LoadImages("Image", fixture.Directory, "Path").Append(ml.Transforms.ResizeImages("Image", 8, 8))
            .Append(ml.Transforms.ConvertToGrayscale("Image"));
        var expected = transformer.Transform(images.Fit(files).Transform(files)).GetColumn<MLImage>("Edited").Single();

        string png = Path.Combine(fixture.Directory, "out.png");
        var (exitCode, log) = Run("--model", zip, "--input", input, "--strength", "0.5", "--sampler", "ddim", "--steps", "6", "--seed", "3", "--out", png);
        Assert.AreEqual(0, exitCode, log);
        using var written = MLImage.CreateFromFile(png);
        CollectionAssert.AreEqual(expected.GetBGRPixels, written.GetBGRPixels, "the other process translated to different pixels");
    }

    [TestMethod]
    public void WrongSizedInput_IsResized_AndSideBySideWritesBoth()
    {
        string dir = TestData.TempDirectory("cli-img2img");
        try
        {
            string input = Path.Combine(dir, "big.png");
            using (var big = TestData.Gray(40, (x, y) => (byte)(6 * x)))
                big.Save(input);
            string png = Path.Combine(dir, "pair.png");
            var (exitCode, log) = Run("--input", input, "--strength", "0.3", "--steps", "4", "--side-by-side", "--out", png);
            Assert.AreEqual(0, exitCode, log);
            using var written = MLImage.CreateFromFile(png);
            Assert.IsGreaterThan(2 * 28 * 4 - 1, written.Width, "input and result, 28 pixels each, enlarged 4x");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private sealed class PathRow
    {
        public string Path { get; set; } = "";
    }
}
