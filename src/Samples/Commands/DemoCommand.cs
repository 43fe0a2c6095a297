using System.CommandLine;
using System.Diagnostics;
using Microsoft.ML.Diffusion.Imaging;
using Spectre.Console;
using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary>The default action: loads the bundled Fashion-MNIST model and writes generated, inpainted and upscaled images to ./out.</summary>
public static class DemoCommand
{
    /// <summary>The bundled model, copied next to the samples' executable.</summary>
    public static string DefaultModelPath => Path.Combine(AppContext.BaseDirectory, "Models", "fashion-mnist-ddpm.zip");

    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model zip", DefaultValueFactory = _ => DefaultModelPath };
        var output = new Option<string>("--out") { Description = "Output folder", DefaultValueFactory = _ => "out" };
        var engine = EngineOption.Create();
        var command = new Command("demo", "Generate, inpaint and upscale images with the bundled model (the default command)") { model, output, engine };
        command.SetAction(parse => Run(parse.GetValue(model)!, parse.GetValue(output)!, parse.GetValue(engine)));
        return command;
    }

    /// <summary>Writes the demo's three PNGs to <paramref name="outDir"/>, the networks run by <paramref name="engine"/>.</summary>
    public static int Run(string modelPath, string outDir, InferenceEngine engine = EngineOption.Default)
    {
        var ml = new MLContext(seed: 1);
        var watch = Stopwatch.StartNew();
        var model = InputFiles.LoadDiffusionModel(ml, modelPath);
        Directory.CreateDirectory(outDir);
        AnsiConsole.MarkupLine($"Loaded [bold]{Markup.Escape(Path.GetFileName(modelPath))}[/] ({model.ParameterCount:N0} parameters, " +
                               $"{model.ImageSize}x{model.ImageSize}, T = {model.Timesteps}) in {watch.Elapsed.TotalSeconds:F1} s.");

        watch.Restart();
        var options = new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlus, Steps = 20, Seed = 0, Engine = engine };
        var images = GenerateCommand.Generate(model, 64, options);
        string gridPath = Path.Combine(outDir, "generated.png");
        using (var grid = ImageGrid.Create(images))
            GenerateCommand.SavePng(grid, gridPath);
        AnsiConsole.MarkupLine($"Generated 64 images (DPM-Solver++, 20 steps, {engine}) in {watch.Elapsed.TotalSeconds:F1} s -> [bold]{Markup.Escape(gridPath)}[/]");
        foreach (var img in images) img.Dispose();

        if (model.Conditioning is null && Directory.Exists(InpaintCommand.ImagesDirectory))
        {
            watch.Restart();
            string inpaintPath = Path.Combine(outDir, "inpainted.png"), upscalePath = Path.Combine(outDir, "upscaled.png");
            InpaintDemo.Inpaint(ml, model, inpaintPath, engine);
            InpaintDemo.Upscale(ml, model, upscalePath, engine);
            AnsiConsole.MarkupLine($"Inpainted 5 test images (5 masks) and upscaled them x2 (RePaint, 50 steps, jump 5, 2 resamplings) in {watch.Elapsed.TotalSeconds:F1} s -> " +
                                   $"[bold]{Markup.Escape(inpaintPath)}[/], [bold]{Markup.Escape(upscalePath)}[/]");
        }
        return 0;
    }
}
