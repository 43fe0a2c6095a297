using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Samples.Data;
using Microsoft.ML.Diffusion.Training;
using Spectre.Console;
using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Commands;

using Command = System.CommandLine.Command;

/// <summary>
/// <c>train-latent</c>: latent diffusion (Rombach et al. 2022) on 64x64 RGB crops of python3-skimage's photos: trains the KL
/// autoencoder, then a diffusion model on its latents, then (for the timing comparison) the same U-Net in pixel space for a
/// few steps; prints the training time per 100 steps and per epoch of both, writes the latent model zip, a sample grid and a
/// reconstruction grid.
/// </summary>
public static class TrainLatentCommand
{
    public static Command Create()
    {
        var data = new Option<string>("--data") { Description = "Folder with the photos (python3-skimage's data folder)", DefaultValueFactory = _ => PhotoCrops.DefaultDirectory };
        var crops = new Option<int>("--crops") { Description = "Number of random crops (one epoch)", DefaultValueFactory = _ => 512 }.AtLeast(1);
        var factor = new Option<int>("--factor") { Description = "Autoencoder downsampling factor (4 or 8)", DefaultValueFactory = _ => 4 }.OneOf(4, 8);
        var aeSteps = new Option<int>("--ae-steps") { Description = "Autoencoder optimizer steps", DefaultValueFactory = _ => 300 }.AtLeast(1);
        var steps = new Option<int>("--steps") { Description = "Latent diffusion optimizer steps", DefaultValueFactory = _ => 200 }.AtLeast(1);
        var pixelSteps = new Option<int>("--pixel-steps") { Description = "Pixel-space diffusion steps for the timing comparison (0 skips it)", DefaultValueFactory = _ => 20 }.AtLeast(0);
        var batch = new Option<int>("--batch-size") { Description = "Images per optimizer step (autoencoder and diffusion)", DefaultValueFactory = _ => 16 }.AtLeast(1);
        var baseChannels = new Option<int>("--base-channels") { Description = "U-Net and autoencoder width", DefaultValueFactory = _ => 32 }.AtLeast(1);
        var seed = new Option<int>("--seed") { Description = "Seed of crops, weights and noise", DefaultValueFactory = _ => 1 };
        var output = new Option<string>("--out") { Description = "Latent model zip to write (autoencoder included)", DefaultValueFactory = _ => "latent-model.zip" };
        var grid = new Option<string>("--grid") { Description = "PNG grid of 16 generated images (DDIM 50)", DefaultValueFactory = _ => "latent-samples.png" };
        var reconstructions = new Option<string>("--reconstructions") { Description = "PNG grid: 8 crops (top) and their reconstructions (bottom)", DefaultValueFactory = _ => "latent-reconstructions.png" };
        var json = new Option<string?>("--json") { Description = "Write the timings as JSON" };

        var command = new Command("train-latent", "Latent diffusion on 64x64 crops of python3-skimage's photos, timed against pixel-space diffusion")
        {
            data, crops, factor, aeSteps, steps, pixelSteps, batch, baseChannels, seed, output, grid, reconstructions, json,
        };
        command.SetAction(parse =>
        {
            int s = PhotoCrops.Size, n = parse.GetValue(crops), b = parse.GetValue(batch), f = parse.GetValue(factor), width = parse.GetValue(baseChannels);
            int seedValue = parse.GetValue(seed);
            List<(string Path, MLImage Image)> photos;
            try
            {
                photos = PhotoCrops.LoadPhotos(parse.GetValue(data)!, s);
            }
            catch (IOException missing)
            {
                throw new CliException($"--data: {missing.Message}", missing);
            }
            var ml = new MLContext(seed: seedValue);
            var rows = PhotoCrops.Crops(photos, n, s, seedValue);
            var images = PhotoCrops.ToDataView(ml, rows);
            AnsiConsole.MarkupLine($"{n} crops of {s}x{s} from {photos.Count} photos in {Markup.Escape(parse.GetValue(data)!)}.");
            using var cts = ConsoleProgress.CancelOnCtrlC();

            var aeOptions = new AutoencoderTrainer.Options
            {
                ImageColumnName = "Image", ImageSize = s, Channels = 3, DownsamplingFactor = f, LatentChannels = 4, BaseChannels = width,
                BatchSize = b, Epochs = 1000, MaxSteps = parse.GetValue(aeSteps), Seed = seedValue, CancellationToken = cts.Token,
            };
            var aeWatch = Stopwatch.StartNew();
            AutoencoderModel autoencoder;
            DiffusionModel latentModel;
            DiffusionModel? pixelModel = null;
            double latentSeconds, pixelSeconds = double.NaN, aeSeconds;
            try
            {
                autoencoder = ConsoleProgress.Run(ctx =>
                {
                    var task = ctx.AddTask("Autoencoder", maxValue: aeOptions.MaxSteps!.Value);
                    aeOptions.Progress = new SyncProgress<TrainingProgress>(p =>
                    {
                        task.Value = p.Step;
                        task.Description = $"Autoencoder: loss {p.AverageLoss:F1}, {p.ImagesPerSecond:F0} img/s";
                    });
                    return ml.Generative.Autoencoder(aeOptions).Fit(images);
                });
                aeSeconds = aeWatch.Elapsed.TotalSeconds;
                AnsiConsole.MarkupLine($"Autoencoder: {autoencoder.ParameterCount:N0} parameters, {aeOptions.MaxSteps} steps in {aeSeconds:F0} s; " +
                                       $"latent {autoencoder.LatentChannels}x{autoencoder.LatentSize}x{autoencoder.LatentSize}.");

                var latentOptions = DiffusionOptions(s, width, b, parse.GetValue(steps), seedValue, cts.Token, autoencoder);
                (latentModel, latentSeconds) = TrainTimed(ml, images, latentOptions, "Latent diffusion");
                int ps = parse.GetValue(pixelSteps);
                if (ps > 0)
                {
                    var pixelOptions = DiffusionOptions(s, width, b, ps, seedValue, cts.Token, null);
                    (pixelModel, pixelSeconds) = TrainTimed(ml, images, pixelOptions, "Pixel diffusion");
                }
            }
            catch (OperationCanceledException)
            {
                AnsiConsole.MarkupLine("[yellow]Training cancelled.[/]");
                return 130;
            }

            double latentPer100 = latentSeconds / latentModel.Config.TrainedSteps * 100;
            double pixelPer100 = pixelModel is null ? double.NaN : pixelSeconds / pixelModel.Config.TrainedSteps * 100;
            double stepsPerEpoch = Math.Ceiling(n / (double)b);
            var table = new Table().AddColumns("model", "network", "parameters", "steps", "seconds", "s / 100 steps", $"s / epoch ({n} crops)");
            table.AddRow("latent", $"U-Net on 4x{s / f}x{s / f}", $"{latentModel.ParameterCount:N0}", $"{latentModel.Config.TrainedSteps}",
                $"{latentSeconds:F1}", $"{latentPer100:F1}", $"{latentPer100 * stepsPerEpoch / 100:F1}");
            if (pixelModel is not null)
                table.AddRow("pixel", $"U-Net on 3x{s}x{s}", $"{pixelModel.ParameterCount:N0}", $"{pixelModel.Config.TrainedSteps}",
                    $"{pixelSeconds:F1}", $"{pixelPer100:F1}", $"{pixelPer100 * stepsPerEpoch / 100:F1}");
            AnsiConsole.Write(table);
            if (pixelModel is not null)
                AnsiConsole.MarkupLine($"Latent diffusion trains [bold]{pixelPer100 / latentPer100:F1}x[/] faster per step (batch {b}, encoder included).");

            string outPath = parse.GetValue(output)!;
            ml.Model.Save(latentModel, images.Schema, outPath);
            AnsiConsole.MarkupLine($"Wrote [bold]{Markup.Escape(outPath)}[/] (diffusion model and autoencoder in one zip, scale factor {latentModel.Latent!.ScaleFactor:G4}).");

            var sampleWatch = Stopwatch.StartNew();
            var generated = latentModel.Generate(16, new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 50, Seed = 0 });
            double sampleSeconds = sampleWatch.Elapsed.TotalSeconds;
            GenerateCommand.SavePng(ImageGrid.Create(generated, columns: 8), parse.GetValue(grid)!);
            var originals = rows.Take(8).Select(r => r.Image).ToList();
            using (var x = ImageTensorConverter.ToTensor(originals, 3))
            using (var rec = autoencoder.Reconstruct(x))
            {
                var both = originals.Concat(ImageTensorConverter.ToImages(rec)).ToList();
                GenerateCommand.SavePng(ImageGrid.Create(both, columns: 8), parse.GetValue(reconstructions)!);
                double l1 = (rec.clamp(-1, 1) - x).abs().mean().item<float>();
                AnsiConsole.MarkupLine($"Reconstruction mean |x - D(E(x))| on 8 crops: {l1:F4} (pixel range [[-1, 1]]); 16 samples (DDIM 50) in {sampleSeconds:F1} s; " +
                                       $"grids: {Markup.Escape(parse.GetValue(grid)!)}, {Markup.Escape(parse.GetValue(reconstructions)!)}.");
            }
            if (parse.GetValue(json) is string jsonPath)
            {
                File.WriteAllText(jsonPath, JsonSerializer.Serialize(new
                {
                    crops = n, size = s, factor = f, batch = b,
                    autoencoder_steps = aeOptions.MaxSteps, autoencoder_seconds = aeSeconds,
                    latent_steps = latentModel.Config.TrainedSteps, latent_seconds = latentSeconds, latent_seconds_per_100_steps = latentPer100,
                    pixel_steps = pixelModel?.Config.TrainedSteps, pixel_seconds = pixelSeconds, pixel_seconds_per_100_steps = pixelPer100,
                    latent_parameters = latentModel.ParameterCount, pixel_parameters = pixelModel?.ParameterCount,
                }, new JsonSerializerOptions { WriteIndented = true, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals }));
            }
            pixelModel?.Dispose();
            latentModel.Dispose();
            autoencoder.Dispose();
            return 0;
        });
        return command;
    }

    /// <summary>The same U-Net for both spaces (base width, multipliers 1, 2, 2, two residual blocks, attention at the deepest
    /// level), T = 1000, linear schedule.</summary>
    private static DiffusionTrainer.Options DiffusionOptions(int size, int width, int batch, int steps, int seed, CancellationToken ct, AutoencoderModel? autoencoder)
    {
        int grid = autoencoder is null ? size : size / autoencoder.DownsamplingFactor;
        return new DiffusionTrainer.Options
        {
            ImageColumnName = "Image", ImageSize = size, Channels = 3, BaseChannels = width, ChannelMultipliers = new[] { 1, 2, 2 },
            AttentionResolutions = new[] { grid / 4 }, NumResBlocks = 2, Timesteps = 1000, BatchSize = batch, Epochs = 1000,
            MaxSteps = steps, LearningRate = 5e-4f, Seed = seed, Autoencoder = autoencoder, CancellationToken = ct,
        };
    }

    private static (DiffusionModel Model, double Seconds) TrainTimed(MLContext ml, IDataView images, DiffusionTrainer.Options options, string name)
    {
        var watch = Stopwatch.StartNew();
        var model = ConsoleProgress.Run(ctx =>
        {
            var task = ctx.AddTask(name, maxValue: options.MaxSteps!.Value);
            options.Progress = new SyncProgress<TrainingProgress>(p =>
            {
                task.Value = p.Step;
                task.Description = $"{name}: loss {p.AverageLoss:F4}, {p.ImagesPerSecond:F1} img/s";
            });
            return ml.Generative.Diffusion(options).Fit(images);
        });
        return (model, watch.Elapsed.TotalSeconds);
    }
}
