using MLImage = Microsoft.ML.Data.MLImage;
using System.CommandLine;
using System.Diagnostics;
using Microsoft.ML.Diffusion.Imaging;
using Spectre.Console;
using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary><c>img2img</c>: translates an image with the diffusion model by SDEdit (Meng et al. 2022): noise it to --strength, then denoise.</summary>
public static class Img2ImgCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model zip (default: the bundled Fashion-MNIST model)", DefaultValueFactory = _ => DemoCommand.DefaultModelPath };
        var input = new Option<string>("--input", "--image") { Description = "Image to translate (resized to the model's size)", DefaultValueFactory = _ => Path.Combine(InpaintCommand.ImagesDirectory, "coat.png") };
        var output = new Option<string>("--out") { Description = "PNG to write: the translated image (model size)", DefaultValueFactory = _ => "img2img.png" };
        var strength = new Option<float>("--strength") { Description = "How much of the image is replaced: 0 returns it, 1 generates from noise (diffusers' default 0.8)", DefaultValueFactory = _ => ImageToImageOptions.DefaultStrength }
            .Between(0f, 1f, "0 returns the input, 1 generates from noise");
        var sampler = new Option<string?>("--sampler") { Description = GenerateCommand.SamplerDescription + " (default: the model's sampler)" };
        sampler.Validators.Add(result =>
        {
            string? value = result.GetValueOrDefault<string?>();
            if (value is not null && !GenerateCommand.SamplerNames.Contains(value))
                result.AddError($"--sampler '{value}' is not recognised; expected one of {string.Join(", ", GenerateCommand.SamplerNames)}.");
        });
        var steps = new Option<int?>("--steps") { Description = "Steps N of a whole loop; only the last int(N * strength) run (default: the sampler's)" }.AtLeast(1);
        var eta = new Option<float>("--eta") { Description = "DDIM eta (0 deterministic, 1 DDPM-like)", DefaultValueFactory = _ => 0f };
        var seed = new Option<uint>("--seed") { Description = "Noise seed", DefaultValueFactory = _ => 0u };
        var label = new Option<int?>("--label") { Description = "Class to translate towards (class-conditional models)" };
        var guidance = new Option<float>("--guidance") { Description = "Classifier-free guidance weight w (class-conditional models)", DefaultValueFactory = _ => 1f };
        var precision = new Option<Precision>("--precision") { Description = "Fp32 or Bf16Mixed", DefaultValueFactory = _ => Precision.Fp32 };
        var engine = EngineOption.Create();
        var grid = new Option<bool>("--side-by-side") { Description = "Write the input and the result side by side, enlarged 4x, instead of the result alone" };
        var command = new Command("img2img", "Translate an image with the diffusion model (SDEdit: noise it to --strength, then denoise)")
        {
            model, input, output, strength, sampler, steps, eta, seed, label, guidance, precision, engine, grid,
        };
        command.SetAction(parse =>
        {
            string inputPath = parse.GetValue(input)!, outPath = parse.GetValue(output)!;
            InputFiles.RequireImage(inputPath, "--input");
            var diffusion = RePaintCliOptions.LoadModel(parse.GetValue(model)!);
            int? fixedLabel = parse.GetValue(label);
            if (parse.GetValue(guidance) != 1f && diffusion.NumClasses == 0)
                throw new CliException("--guidance needs a class-conditional model (train --conditional).");
            if (fixedLabel is int l && (diffusion.NumClasses == 0 || l < 0 || l >= diffusion.NumClasses))
                throw new CliException(diffusion.NumClasses == 0
                    ? "--label needs a class-conditional model (train --conditional)."
                    : $"--label {l} is outside the model's classes 0..{diffusion.NumClasses - 1}.");

            using var cts = ConsoleProgress.CancelOnCtrlC();
            var samplerOptions = diffusion.DefaultSampler;
            if (parse.GetValue(sampler) is string name && GenerateCommand.ParseSampler(name) is var kind && kind != samplerOptions.Sampler)
            {
                samplerOptions.Sampler = kind;
                samplerOptions.Steps = null;
            }
            if (parse.GetValue(steps) is int n) samplerOptions.Steps = n;
            samplerOptions.Eta = parse.GetValue(eta);
            samplerOptions.Seed = parse.GetValue(seed);
            samplerOptions.GuidanceScale = parse.GetValue(guidance);
            samplerOptions.Precision = parse.GetValue(precision);
            samplerOptions.Engine = parse.GetValue(engine);
            samplerOptions.CancellationToken = cts.Token;
            var options = new ImageToImageOptions
            {
                Strength = parse.GetValue(strength), Sampler = samplerOptions, LabelColumnName = fixedLabel is null ? null : "Label",
            };
            int size = diffusion.ImageSize;
            var ml = new MLContext(seed: 1);
            string full = Path.GetFullPath(inputPath);
            var data = ml.Data.LoadFromEnumerable(new[] { new Img2ImgRow { Path = Path.GetFileName(full), Label = fixedLabel ?? 0 } });
            var watch = Stopwatch.StartNew();
            MLImage source, result;
            int denoisingSteps;
            try
            {
                // LoadImages -> ResizeImages -> ConvertToGrayscale -> ImageToImage; the estimator copies the options, so it is made
                // inside, once the progress bar is attached.
                (source, result, denoisingSteps) = GenerateCommand.WithSamplingProgress(diffusion, 1, samplerOptions, () =>
                {
                    var transformer = InpaintCommand.ImagePipeline(ml, Path.GetDirectoryName(full)!, size, diffusion.Channels)
                        .Append(ml.Generative.ImageToImage(diffusion, "Edited", "Image", options)).Fit(data);
                    var (a, b) = InpaintCommand.ReadTwo(transformer.Transform(data), "Image", "Edited");
                    return (a, b, transformer.LastTransformer.DenoisingSteps);
                });
            }
            catch (OperationCanceledException)
            {
                AnsiConsole.MarkupLine("[yellow]Image-to-image cancelled.[/]");
                return 130;
            }

            if (parse.GetValue(grid))
            {
                using var pair = ImageGrid.Create(new[] { source, result }, columns: 2, background: 64);
                using var zoomed = UpscaleCommand.Repeat(pair, 4);
                GenerateCommand.SavePng(zoomed, outPath);
            }
            else
            {
                GenerateCommand.SavePng(result, outPath);
            }
            AnsiConsole.MarkupLine($"Translated {Markup.Escape(Path.GetFileName(inputPath))} ({size}x{size}, strength {options.Strength}, " +
                                   $"{SamplerRegistryName(samplerOptions)}, {denoisingSteps} of {samplerOptions.ResolveSteps(diffusion.Timesteps)} steps) in " +
                                   $"{watch.Elapsed.TotalSeconds:F1} s; wrote [bold]{Markup.Escape(outPath)}[/].");
            result.Dispose();
            source.Dispose();
            return 0;
        });
        return command;
    }

    private static string SamplerRegistryName(SamplerOptions options) =>
        GenerateCommand.SamplerNames.FirstOrDefault(n => GenerateCommand.ParseSampler(n) == options.Sampler) ?? options.Sampler.ToString();

    private sealed class Img2ImgRow
    {
        public string Path { get; set; } = "";

        public int Label { get; set; }
    }
}
