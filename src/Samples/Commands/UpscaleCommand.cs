using MLImage = Microsoft.ML.Data.MLImage;
using System.CommandLine;
using Microsoft.ML.Data;
using System.Diagnostics;
using Microsoft.ML.Diffusion.Imaging;
using Spectre.Console;
using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary><c>upscale</c>: upscales an image by 2 or 4 with the diffusion model (RePaint-style) and writes input and result side by side.</summary>
public static class UpscaleCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model zip (default: the bundled Fashion-MNIST model)", DefaultValueFactory = _ => DemoCommand.DefaultModelPath };
        var image = new Option<string>("--image") { Description = "Image to upscale (resized to model size / factor first)", DefaultValueFactory = _ => Path.Combine(InpaintCommand.ImagesDirectory, "sneaker.png") };
        var factor = new Option<int>("--factor") { Description = "2 or 4", DefaultValueFactory = _ => 2 };
        factor.OneOf(2, 4);
        var output = new Option<string>("--out") { Description = "PNG to write: the input (pixel-repeated) and the result side by side", DefaultValueFactory = _ => "upscaled.png" };
        var rePaint = new RePaintCliOptions();
        var command = new Command("upscale", "Upscale an image by 2 or 4 with the diffusion model (RePaint-style super-resolution)") { model, image, factor, output };
        rePaint.AddTo(command);
        command.SetAction(parse =>
        {
            string imagePath = parse.GetValue(image)!, outPath = parse.GetValue(output)!;
            InputFiles.RequireImage(imagePath, "--image");
            var diffusion = RePaintCliOptions.LoadModel(parse.GetValue(model)!);

            using var cts = ConsoleProgress.CancelOnCtrlC();
            var options = rePaint.Read<UpscaleOptions>(parse, cts.Token);
            options.Factor = parse.GetValue(factor);
            int small = diffusion.ImageSize / options.Factor;
            var ml = new MLContext(seed: 1);
            string full = Path.GetFullPath(imagePath);
            var data = ml.Data.LoadFromEnumerable(new[] { new UpscaleRow { Path = Path.GetFileName(full) } });
            var watch = Stopwatch.StartNew();
            MLImage input, result;
            try
            {
                // LoadImages -> ResizeImages (model size / factor) -> ConvertToGrayscale -> Upscale.
                (input, result) = RePaintCliOptions.WithProgress(diffusion, options, 1, $"Upscaling x{options.Factor}",
                    () => InpaintCommand.ReadTwo(InpaintCommand.ImagePipeline(ml, Path.GetDirectoryName(full)!, small, diffusion.Channels)
                        .Append(ml.Generative.Upscale(diffusion, "Upscaled", "Image", options)).Fit(data).Transform(data), "Image", "Upscaled"));
            }
            catch (OperationCanceledException)
            {
                AnsiConsole.MarkupLine("[yellow]Upscaling cancelled.[/]");
                return 130;
            }

            using var blocky = Repeat(input, options.Factor);
            using var grid = ImageGrid.Create(new[] { blocky, result }, columns: 2, background: 64);
            using var zoomed = UpscaleCommand.Repeat(grid, 4);          // enlarged 4x (pixel repetition) for viewing
            GenerateCommand.SavePng(zoomed, outPath);
            AnsiConsole.MarkupLine($"Upscaled {Markup.Escape(Path.GetFileName(imagePath))} from {small}x{small} to {diffusion.ImageSize}x{diffusion.ImageSize} " +
                                   $"({options.ResolveSteps(diffusion.Timesteps)} steps, jump {options.JumpLength}, {options.Resamplings} resamplings) in " +
                                   $"{watch.Elapsed.TotalSeconds:F1} s; wrote [bold]{Markup.Escape(outPath)}[/] (input pixel-repeated | result).");
            result.Dispose();
            input.Dispose();
            return 0;
        });
        return command;
    }

    /// <summary>Each pixel repeated <paramref name="factor"/> x <paramref name="factor"/> times (nearest-neighbour enlargement, for display).</summary>
    public static MLImage Repeat(MLImage image, int factor)
    {
        int w = image.Width, h = image.Height, bw = w * factor;
        var src = image.Pixels.ToArray();
        var px = new byte[src.Length * factor * factor];
        for (int y = 0; y < h * factor; y++)
            for (int x = 0; x < bw; x++)
                Array.Copy(src, 4 * ((y / factor) * w + x / factor), px, 4 * (y * bw + x), 4);
        return MLImage.CreateFromPixels(bw, h * factor, image.PixelFormat, px);
    }

    private sealed class UpscaleRow
    {
        public string Path { get; set; } = "";
    }
}
