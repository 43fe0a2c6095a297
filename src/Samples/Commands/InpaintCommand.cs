using MLImage = Microsoft.ML.Data.MLImage;
using System.CommandLine;
using Microsoft.ML.Data;
using System.Diagnostics;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Sampling;
using Spectre.Console;
using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary><c>inpaint</c>: fills the masked part of an image with RePaint and writes input, masked input and result side by side.</summary>
public static class InpaintCommand
{
    /// <summary>The Fashion-MNIST test images shipped next to the executable.</summary>
    public static string ImagesDirectory => Path.Combine(AppContext.BaseDirectory, "Images");

    /// <summary>The mask names the command accepts, besides a PNG file.</summary>
    public static readonly string[] MaskNames = { "thin", "wide", "half", "outer", "lines", "every-second" };

    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model zip (default: the bundled Fashion-MNIST model)", DefaultValueFactory = _ => DemoCommand.DefaultModelPath };
        var image = new Option<string>("--image") { Description = "Image to fill (resized to the model's size)", DefaultValueFactory = _ => Path.Combine(ImagesDirectory, "coat.png") };
        var mask = new Option<string>("--mask") { Description = $"{string.Join(", ", MaskNames)}, or a PNG (white keeps, black fills)", DefaultValueFactory = _ => "wide" };
        var output = new Option<string>("--out") { Description = "PNG to write: input, masked input and result side by side", DefaultValueFactory = _ => "inpainted.png" };
        var rePaint = new RePaintCliOptions();
        var command = new Command("inpaint", "Fill the masked part of an image (RePaint)") { model, image, mask, output };
        rePaint.AddTo(command);
        command.SetAction(parse =>
        {
            string imagePath = parse.GetValue(image)!, maskArg = parse.GetValue(mask)!, outPath = parse.GetValue(output)!;
            var imageSize = InputFiles.RequireImage(imagePath, "--image");
            InpaintMaskKind? kind = ParseMask(maskArg);
            if (kind is null) CheckMaskFile(maskArg, imagePath, imageSize);
            var diffusion = RePaintCliOptions.LoadModel(parse.GetValue(model)!);

            using var cts = ConsoleProgress.CancelOnCtrlC();
            var options = rePaint.Read<InpaintOptions>(parse, cts.Token);
            int size = diffusion.ImageSize;
            var ml = new MLContext(seed: 1);
            bool[] keep = kind is InpaintMaskKind k ? InpaintMasks.Create(k, size, (int)options.Seed) : ReadMask(ml, maskArg, size);
            using var maskImage = InpaintMasks.ToImage(keep, size);
            // LoadImages -> ResizeImages -> ConvertToGrayscale -> Inpaint, on one row: the image path and a Boolean mask vector.
            string full = Path.GetFullPath(imagePath);
            var definition = SchemaDefinition.Create(typeof(InpaintRow));
            definition[nameof(InpaintRow.Mask)].ColumnType = new VectorDataViewType(BooleanDataViewType.Instance, size * size);
            var data = ml.Data.LoadFromEnumerable(new[] { new InpaintRow { Path = Path.GetFileName(full), Mask = keep } }, definition);
            var watch = Stopwatch.StartNew();
            MLImage input, result;
            try
            {
                // The estimator copies the options: create it inside, once the progress bar is attached.
                (input, result) = RePaintCliOptions.WithProgress(diffusion, options, 1, "Inpainting",
                    () => ReadTwo(ImagePipeline(ml, Path.GetDirectoryName(full)!, size, diffusion.Channels)
                        .Append(ml.Generative.Inpaint(diffusion, "Inpainted", "Image", "Mask", options)).Fit(data).Transform(data), "Image", "Inpainted"));
            }
            catch (OperationCanceledException)
            {
                AnsiConsole.MarkupLine("[yellow]Inpainting cancelled.[/]");
                return 130;
            }

            using var masked = MaskedView(input, maskImage);
            using var grid = ImageGrid.Create(new[] { input, masked, result }, columns: 3, background: 64);
            using var zoomed = UpscaleCommand.Repeat(grid, 4);          // enlarged 4x (pixel repetition) for viewing
            GenerateCommand.SavePng(zoomed, outPath);
            AnsiConsole.MarkupLine($"Inpainted {Markup.Escape(Path.GetFileName(imagePath))} ({size}x{size}, mask {Markup.Escape(kind?.ToString() ?? maskArg)}, " +
                                   $"{options.ResolveSteps(diffusion.Timesteps)} steps, jump {options.JumpLength}, {options.Resamplings} resamplings, " +
                                   $"{options.NetworkCalls(diffusion.Timesteps)} network calls) in {watch.Elapsed.TotalSeconds:F1} s; " +
                                   $"wrote [bold]{Markup.Escape(outPath)}[/] (input | masked | result).");
            result.Dispose();
            input.Dispose();
            return 0;
        });
        return command;
    }

    /// <summary>The built-in mask a command-line name stands for, or null for a file name.</summary>
    public static InpaintMaskKind? ParseMask(string name) => name switch
    {
        "thin" => InpaintMaskKind.Thin,
        "wide" => InpaintMaskKind.Wide,
        "half" => InpaintMaskKind.Half,
        "outer" => InpaintMaskKind.Outer,
        "lines" => InpaintMaskKind.AlternatingLines,
        "every-second" => InpaintMaskKind.EverySecondPixel,
        _ => null,
    };

    /// <summary>LoadImages (column Path, relative to <paramref name="directory"/>) -> ResizeImages to <paramref name="size"/> -> ConvertToGrayscale
    /// when the model has one channel: the column Image.</summary>
    public static IEstimator<ITransformer> ImagePipeline(MLContext ml, string directory, int size, int channels)
    {
        IEstimator<ITransformer> pipeline = ml.Transforms.LoadImages("Image", directory, "Path")
            .Append(ml.Transforms.ResizeImages("Image", size, size));
        return channels == 1 ? pipeline.Append(ml.Transforms.ConvertToGrayscale("Image")) : pipeline;
    }

    /// <summary>Reads two image columns of the single row of <paramref name="data"/> with one cursor (the pipeline runs once).</summary>
    public static (MLImage First, MLImage Second) ReadTwo(IDataView data, string first, string second) => ReadPairs(data, first, second).Single();

    /// <summary>Reads two image columns of every row of <paramref name="data"/> with one cursor (the pipeline runs once).</summary>
    public static List<(MLImage First, MLImage Second)> ReadPairs(IDataView data, string first, string second)
    {
        var result = new List<(MLImage, MLImage)>();
        using var cursor = data.GetRowCursor(new[] { data.Schema[first], data.Schema[second] });
        var getFirst = cursor.GetGetter<MLImage>(data.Schema[first]);
        var getSecond = cursor.GetGetter<MLImage>(data.Schema[second]);
        while (cursor.MoveNext())
        {
            MLImage a = null!, b = null!;
            getFirst(ref a);
            getSecond(ref b);
            result.Add((Copy(a), Copy(b)));
        }
        return result;
    }

    /// <summary>Throws unless <paramref name="maskPath"/> is a readable image of the same size as the image to fill.</summary>
    public static void CheckMaskFile(string maskPath, string imagePath, (int Width, int Height) imageSize)
    {
        if (!File.Exists(maskPath) && !Directory.Exists(maskPath))
            throw new CliException($"--mask '{maskPath}' is neither one of {string.Join(", ", MaskNames)} nor an existing PNG file.");
        var (w, h) = InputFiles.RequireImage(maskPath, "--mask");
        if ((w, h) != imageSize)
            throw new CliException($"--mask '{maskPath}' is {w}x{h}; expected the size of --image '{imagePath}' ({imageSize.Width}x{imageSize.Height}).");
    }

    /// <summary>A mask PNG resized to <paramref name="size"/>: white (green channel &gt;= 128) keeps.</summary>
    public static bool[] ReadMask(MLContext ml, string path, int size)
    {
        string full = Path.GetFullPath(path);
        var files = ml.Data.LoadFromEnumerable(new[] { new InpaintRow { Path = Path.GetFileName(full) } });
        var resized = ImagePipeline(ml, Path.GetDirectoryName(full)!, size, 3).Fit(files).Transform(files);
        // Read the pixels inside the cursor: the image transforms dispose their images when the cursor moves on or closes.
        using var cursor = resized.GetRowCursor(new[] { resized.Schema["Image"] });
        var getImage = cursor.GetGetter<MLImage>(resized.Schema["Image"]);
        if (!cursor.MoveNext()) throw new CliException($"--mask '{path}' could not be read.");
        MLImage image = null!;
        getImage(ref image);
        var px = image.Pixels.ToArray();
        return Enumerable.Range(0, size * size).Select(p => px[4 * p + 1] >= 128).ToArray();
    }

    /// <summary>A copy (ML.NET image transforms dispose the images they read).</summary>
    public static MLImage Copy(MLImage image) =>
        MLImage.CreateFromPixels(image.Width, image.Height, image.PixelFormat, image.Pixels.ToArray());

    /// <summary>The input with its filled pixels shown in mid grey.</summary>
    public static MLImage MaskedView(MLImage image, MLImage mask)
    {
        var px = image.Pixels.ToArray();
        var m = mask.Pixels.ToArray();
        for (int p = 0; p < px.Length / 4; p++)
        {
            if (m[4 * p + 1] < 128) px[4 * p] = px[4 * p + 1] = px[4 * p + 2] = 128;
        }

        return MLImage.CreateFromPixels(image.Width, image.Height, image.PixelFormat, px);
    }

    private sealed class InpaintRow
    {
        public string Path { get; set; } = "";

        public bool[] Mask { get; set; } = Array.Empty<bool>();
    }
}

/// <summary>The RePaint options shared by the inpaint, upscale and evaluate-inpaint commands.</summary>
public sealed class RePaintCliOptions
{
    private readonly Option<int> _steps = new Option<int>("--steps") { Description = "Sampling steps (RePaint: 250)", DefaultValueFactory = _ => 100 }.AtLeast(1);
    private readonly Option<int> _jump = new Option<int>("--jump") { Description = "Jump length j (RePaint: 10)", DefaultValueFactory = _ => 5 }.AtLeast(1);
    private readonly Option<int> _resamplings = new Option<int>("--resamplings") { Description = "Resamplings r, 1 = none (RePaint: 10)", DefaultValueFactory = _ => 5 }.AtLeast(1);
    private readonly Option<uint> _seed = new("--seed") { Description = "Noise seed (and seed of the thin/wide masks)", DefaultValueFactory = _ => 0u };
    private readonly Option<InferenceEngine> _engine = EngineOption.Create();

    /// <summary>Adds the options to <paramref name="command"/>.</summary>
    public void AddTo(Command command)
    {
        command.Options.Add(_steps);
        command.Options.Add(_jump);
        command.Options.Add(_resamplings);
        command.Options.Add(_seed);
        command.Options.Add(_engine);
    }

    /// <summary>The parsed settings.</summary>
    public T Read<T>(ParseResult parse, CancellationToken token) where T : RePaintOptions, new() => new()
    {
        Steps = parse.GetValue(_steps), JumpLength = parse.GetValue(_jump), Resamplings = parse.GetValue(_resamplings),
        Seed = parse.GetValue(_seed), Engine = parse.GetValue(_engine), CancellationToken = token,
    };

    /// <summary>Loads the <c>--model</c> zip with the library's checked loader; a missing or bad file throws a <see cref="CliException"/>.</summary>
    public static DiffusionModel LoadModel(string path) => InputFiles.LoadDiffusionModel(new MLContext(), path);

    /// <summary>Runs <paramref name="work"/> (RePaint on <paramref name="count"/> images) under a progress bar of all its schedule entries.</summary>
    public static T WithProgress<T>(DiffusionModel model, RePaintOptions options, int count, string label, Func<T> work)
    {
        int perBatch = options.ScheduleLength(model.Timesteps);
        int batches = (count + options.BatchSize - 1) / options.BatchSize;
        return ConsoleProgress.Run(ctx =>
        {
            var task = ctx.AddTask($"{label} {count} image{(count == 1 ? "" : "s")}", maxValue: perBatch * batches);
            options.Progress = new SyncProgress<SamplingProgress>(p => task.Value = p.BatchIndex * perBatch + p.Step);
            try
            {
                return work();
            }
            finally
            {
                options.Progress = null;
            }
        });
    }
}
