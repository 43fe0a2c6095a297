using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Samples.Data;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Transforms.Image;
using Spectre.Console;
using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>evaluate-inpaint</c>: on the first N Fashion-MNIST test images, the mean squared error in the filled region for each built-in
/// mask (RePaint with and without resampling, filling with the mean of the known pixels, nearest known pixel), and for x2 upscaling
/// of 14x14 inputs (every second pixel of the original) MSE and PSNR against the 28x28 originals beside bicubic and pixel repetition.
/// </summary>
public static class EvaluateInpaintCommand
{
    private const int Size = 28;

    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model zip (default: the bundled 28x28 Fashion-MNIST model)", DefaultValueFactory = _ => DemoCommand.DefaultModelPath };
        var data = new Option<string>("--data") { Description = "Folder with the Fashion-MNIST IDX files", DefaultValueFactory = _ => FashionMnist.DefaultDirectory };
        var count = new Option<int>("--count") { Description = "Test images (the first N of t10k)", DefaultValueFactory = _ => 100 }.AtLeast(1);
        var steps = new Option<int>("--steps") { Description = "Sampling steps", DefaultValueFactory = _ => 50 }.AtLeast(1);
        var jump = new Option<int>("--jump") { Description = "Jump length j", DefaultValueFactory = _ => 5 }.AtLeast(1);
        var resamplings = new Option<int>("--resamplings") { Description = "Resamplings r of the resampling runs (the other runs use 1)", DefaultValueFactory = _ => 5 }.AtLeast(1);
        var seed = new Option<uint>("--seed") { Description = "Noise seed of image 0 (image i: seed + i); also seeds the thin/wide masks", DefaultValueFactory = _ => 0u };
        var batch = new Option<int>("--batch-size") { Description = "Images filled together", DefaultValueFactory = _ => 100 }.AtLeast(1);
        var json = new Option<string?>("--json") { Description = "Write the figures to this JSON file" };
        var markdown = new Option<string?>("--markdown") { Description = "Write the table to this markdown file" };
        var command = new Command("evaluate-inpaint", "MSE of RePaint inpainting per mask and PSNR of x2 upscaling on Fashion-MNIST test images, beside simple baselines")
            { model, data, count, steps, jump, resamplings, seed, batch, json, markdown };
        command.SetAction(parse => Run(parse.GetValue(model)!, parse.GetValue(data)!, parse.GetValue(count), parse.GetValue(steps), parse.GetValue(jump),
            parse.GetValue(resamplings), parse.GetValue(seed), parse.GetValue(batch), parse.GetValue(json), parse.GetValue(markdown)));
        return command;
    }

    private sealed class InpaintRow
    {
        [ImageType(Size, Size)]
        public MLImage Image { get; set; } = null!;

        [VectorType(Size * Size)]
        public bool[] Mask { get; set; } = new bool[Size * Size];
    }

    private sealed class SmallRow
    {
        [ImageType(Size / 2, Size / 2)]
        public MLImage Small { get; set; } = null!;
    }

    public static int Run(string modelPath, string dataDir, int count, int steps, int jump, int resamplings, uint seed, int batchSize,
        string? jsonPath, string? markdownPath)
    {
        var diffusion = RePaintCliOptions.LoadModel(modelPath);
        if (diffusion.ImageSize != Size || diffusion.Channels != 1)
        {
            throw new CliException($"--model '{modelPath}' makes {diffusion.ImageSize}x{diffusion.ImageSize} images with {diffusion.Channels} channel(s); this evaluation needs a 28x28 grayscale Fashion-MNIST model.");
        }
        InputFiles.RequireFashionMnist(dataDir, "t10k");
        var originals = FashionMnist.ReadRaw(dataDir, "t10k", count).ToList();
        if (originals.Count < count)
        {
            throw new CliException($"--count {count} exceeds the {originals.Count} test images.");
        }

        var ml = new MLContext(seed: 1);
        using var cts = ConsoleProgress.CancelOnCtrlC();
        RePaintOptions Settings(RePaintOptions o, int r)
        {
            o.Steps = steps; o.JumpLength = jump; o.Resamplings = r; o.Seed = seed; o.BatchSize = batchSize; o.CancellationToken = cts.Token;
            return o;
        }

        var kinds = Enum.GetValues<InpaintMaskKind>();
        var results = new JsonArray();
        var rows = new List<string[]>();
        var total = Stopwatch.StartNew();
        try
        {
            foreach (var kind in kinds)
            {
                var masks = Enumerable.Range(0, count).Select(i => InpaintMasks.Create(kind, Size, unchecked((int)(seed + (uint)i)))).ToList();
                var input = ml.Data.LoadFromEnumerable(originals.Select((o, i) => new InpaintRow { Image = Gray(o, Size), Mask = masks[i] }).ToList());
                var figures = new Dictionary<string, double>();
                var seconds = new Dictionary<string, double>();
                foreach (int r in new[] { resamplings, 1 })
                {
                    var options = (InpaintOptions)Settings(new InpaintOptions(), r);
                    var watch = Stopwatch.StartNew();
                    var filled = RePaintCliOptions.WithProgress(diffusion, options, count, $"{kind}, r = {r}:",
                        () => ml.Generative.Inpaint(diffusion, "Inpainted", "Image", "Mask", options).Fit(input).Transform(input)
                            .GetColumn<MLImage>("Inpainted").Select(GrayBytes).ToList());
                    seconds[$"r{r}"] = watch.Elapsed.TotalSeconds;
                    figures[$"repaint_r{r}"] = FilledMse(originals, filled, masks);
                }
                figures["mean_fill"] = FilledMse(originals, originals.Select((o, i) => InpaintBaselines.MeanFill(o, masks[i])).ToList(), masks);
                figures["nearest_fill"] = FilledMse(originals, originals.Select((o, i) => InpaintBaselines.NearestFill(o, masks[i], Size)).ToList(), masks);
                double fraction = masks.Average(InpaintMasks.FilledFraction);
                results.Add(new JsonObject
                {
                    ["mask"] = kind.ToString(), ["filled_fraction"] = Math.Round(fraction, 4),
                    ["mse_repaint_resampling"] = figures[$"repaint_r{resamplings}"], ["mse_repaint_no_resampling"] = figures["repaint_r1"],
                    ["mse_mean_of_known"] = figures["mean_fill"], ["mse_nearest_known"] = figures["nearest_fill"],
                    ["seconds_resampling"] = Math.Round(seconds[$"r{resamplings}"], 1), ["seconds_no_resampling"] = Math.Round(seconds["r1"], 1),
                });
                rows.Add(new[]
                {
                    kind.ToString(), $"{fraction:P0}", F(figures[$"repaint_r{resamplings}"]), F(figures["repaint_r1"]), F(figures["mean_fill"]), F(figures["nearest_fill"]),
                });
                AnsiConsole.MarkupLine($"{kind}: RePaint r={resamplings} {F(figures[$"repaint_r{resamplings}"])}, r=1 {F(figures["repaint_r1"])}, " +
                                       $"mean {F(figures["mean_fill"])}, nearest {F(figures["nearest_fill"])} ({seconds[$"r{resamplings}"]:F0} s + {seconds["r1"]:F0} s)");
            }

            // Upscaling x2: 14x14 inputs = every second pixel of the originals (the transform's grid), compared on all 28x28 pixels.
            const int small = Size / 2;
            var lows = originals.Select(o => Enumerable.Range(0, small * small).Select(p => o[(2 * (p / small)) * Size + 2 * (p % small)]).ToArray()).ToList();
            var lowData = ml.Data.LoadFromEnumerable(lows.Select(l => new SmallRow { Small = Gray(l, small) }).ToList());
            var up = new Dictionary<string, double>();
            var upSeconds = new Dictionary<string, double>();
            foreach (int r in new[] { resamplings, 1 })
            {
                var options = (UpscaleOptions)Settings(new UpscaleOptions { Factor = 2 }, r);
                var watch = Stopwatch.StartNew();
                var upscaled = RePaintCliOptions.WithProgress(diffusion, options, count, $"Upscale x2, r = {r}:",
                    () => ml.Generative.Upscale(diffusion, "Upscaled", "Small", options).Fit(lowData).Transform(lowData)
                        .GetColumn<MLImage>("Upscaled").Select(GrayBytes).ToList());
                upSeconds[$"r{r}"] = watch.Elapsed.TotalSeconds;
                up[$"repaint_r{r}"] = WholeMse(originals, upscaled);
            }
            up["bicubic"] = WholeMse(originals, lows.Select(l => InpaintBaselines.Bicubic(l, small, 2)).ToList());
            up["nearest"] = WholeMse(originals, lows.Select(l => InpaintBaselines.Nearest(l, small, 2)).ToList());
            var upJson = new JsonObject();
            foreach (var (name, mse) in up) upJson[name] = new JsonObject { ["mse"] = mse, ["psnr_db"] = Math.Round(Psnr(mse), 3) };
            upJson["seconds_resampling"] = Math.Round(upSeconds[$"r{resamplings}"], 1);
            upJson["seconds_no_resampling"] = Math.Round(upSeconds["r1"], 1);

            double elapsed = total.Elapsed.TotalSeconds;
            string settings = $"{count} Fashion-MNIST test images (t10k 0..{count - 1}), model {Path.GetFileName(modelPath)} (T = {diffusion.Timesteps}), " +
                              $"DDPM {steps} steps, jump length {jump}, resamplings {resamplings} (\"with\") or 1 (\"without\"), " +
                              $"{RePaintSchedule.NetworkCalls(steps, jump, resamplings)} vs {steps} network calls per batch, seed {seed}; total {elapsed / 60:F1} min";
            string table = Markdown(rows, up, resamplings, settings);
            AnsiConsole.WriteLine();
            AnsiConsole.WriteLine(table);
            if (markdownPath != null) Write(markdownPath, table);
            if (jsonPath != null)
            {
                var doc = new JsonObject
                {
                    ["count"] = count, ["model"] = Path.GetFileName(modelPath), ["timesteps"] = diffusion.Timesteps, ["steps"] = steps,
                    ["jump_length"] = jump, ["resamplings"] = resamplings, ["seed"] = seed, ["batch_size"] = batchSize,
                    ["network_calls_per_batch_resampling"] = RePaintSchedule.NetworkCalls(steps, jump, resamplings),
                    ["mse_scale"] = "pixel values in [0, 1]", ["inpainting"] = results, ["upscale_x2"] = upJson,
                    ["total_seconds"] = Math.Round(elapsed, 1),
                };
                Write(jsonPath, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            }
        }
        catch (OperationCanceledException)
        {
            AnsiConsole.MarkupLine("[yellow]Evaluation cancelled.[/]");
            return 130;
        }
        return 0;
    }

    private static string F(double mse) => mse.ToString("F4", CultureInfo.InvariantCulture);

    private static double Psnr(double mse) => 10 * Math.Log10(1.0 / mse);

    private static string Markdown(List<string[]> rows, Dictionary<string, double> up, int resamplings, string settings)
    {
        var sb = new StringBuilder();
        sb.AppendLine("Inpainting: mean squared error in the filled region (pixel values in [0, 1]; lower is better).");
        sb.AppendLine();
        sb.AppendLine($"| Mask | Filled | RePaint, r = {resamplings} | RePaint, r = 1 | Mean of known pixels | Nearest known pixel |");
        sb.AppendLine("|---|---:|---:|---:|---:|---:|");
        foreach (var r in rows) sb.AppendLine($"| {string.Join(" | ", r)} |");
        sb.AppendLine();
        sb.AppendLine("Upscaling x2 (14x14 = every second pixel of the 28x28 original): MSE and PSNR over all 28x28 pixels.");
        sb.AppendLine();
        sb.AppendLine("| Method | MSE | PSNR (dB) |");
        sb.AppendLine("|---|---:|---:|");
        foreach (var (name, label) in new[] { ($"repaint_r{resamplings}", $"RePaint, r = {resamplings}"), ("repaint_r1", "RePaint, r = 1"), ("bicubic", "Bicubic (grid-aligned)"), ("nearest", "Pixel repetition") })
            sb.AppendLine($"| {label} | {F(up[name])} | {Psnr(up[name]).ToString("F2", CultureInfo.InvariantCulture)} |");
        sb.AppendLine();
        sb.AppendLine($"Settings: {settings}.");
        return sb.ToString();
    }

    private static void Write(string path, string text)
    {
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir != null) Directory.CreateDirectory(dir);
        File.WriteAllText(path, text);
        AnsiConsole.MarkupLine($"wrote {Markup.Escape(path)}");
    }

    /// <summary>MSE over all filled pixels of all images (pooled).</summary>
    private static double FilledMse(List<byte[]> originals, List<byte[]> results, List<bool[]> keep)
    {
        double sse = 0;
        long n = 0;
        for (int i = 0; i < originals.Count; i++)
        {
            var (s, c) = InpaintBaselines.SquaredError(originals[i], results[i], keep[i].Select(k => !k).ToArray());
            sse += s;
            n += c;
        }
        return sse / n;
    }

    private static double WholeMse(List<byte[]> originals, List<byte[]> results)
    {
        double sse = 0;
        long n = 0;
        for (int i = 0; i < originals.Count; i++)
        {
            var (s, c) = InpaintBaselines.SquaredError(originals[i], results[i]);
            sse += s;
            n += c;
        }
        return sse / n;
    }

    /// <summary>A grey Bgra32 image from row-major bytes.</summary>
    private static MLImage Gray(byte[] values, int size)
    {
        var px = new byte[4 * values.Length];
        for (int p = 0; p < values.Length; p++)
        {
            px[4 * p] = px[4 * p + 1] = px[4 * p + 2] = values[p];
            px[4 * p + 3] = 255;
        }
        return MLImage.CreateFromPixels(size, size, MLPixelFormat.Bgra32, px);
    }

    /// <summary>The green channel of a grey image, row-major.</summary>
    private static byte[] GrayBytes(MLImage image)
    {
        var px = image.Pixels;
        var result = new byte[image.Width * image.Height];
        for (int p = 0; p < result.Length; p++) result[p] = px[4 * p + 1];
        return result;
    }
}
