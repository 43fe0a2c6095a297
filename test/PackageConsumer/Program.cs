// A new user's app: references only the Microsoft.ML.Diffusion package and TorchSharp-cpu (see PackageConsumer.csproj.in).
// PackageConsumerTests packs the library, builds this app against the package from a local feed and runs:
//   train IMAGES MODEL.zip     LoadImages -> ResizeImages -> train a tiny model -> save the whole pipeline
//   use MODEL.zip IMAGES OUT   (a fresh process) load it -> PredictionEngine -> Inpaint -> Upscale, writing PNGs to OUT
using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion;
using Microsoft.ML.Transforms.Image;

const int Size = 16;
var ml = new MLContext(seed: 1);
var clock = Stopwatch.StartNew();

switch (args)
{
    case ["train", var imageFolder, var modelPath]:
    {
        IDataView files = ImageFiles(ml, imageFolder);
        var pipeline = ml.Transforms.LoadImages("Image", imageFolder, "Path")
            .Append(ml.Transforms.ResizeImages("Image", Size, Size))
            .Append(ml.Generative.Diffusion(new DiffusionTrainer.Options
            {
                ImageColumnName = "Image", ImageSize = Size, Channels = 1, BaseChannels = 8, ChannelMultipliers = [1, 2],
                NumResBlocks = 1, GroupNormGroups = 4, Timesteps = 50, Epochs = 2, BatchSize = 5, LearningRate = 1e-3f, Seed = 3,
            }));
        var model = pipeline.Fit(files);
        ml.Model.Save(model, files.Schema, modelPath);
        Console.WriteLine($"train: saved {new FileInfo(modelPath).Length} bytes in {clock.Elapsed.TotalSeconds:F1} s");
        return 0;
    }
    case ["use", var modelPath, var imageFolder, var outFolder]:
    {
        Directory.CreateDirectory(outFolder);
        ITransformer pipeline = ml.Model.Load(modelPath, out var inputSchema);
        Console.WriteLine($"use: loaded a {pipeline.GetType().Name} with input columns {string.Join(",", inputSchema.Select(c => c.Name))}");
        DiffusionModel model = ml.Generative.LoadDiffusionModel(modelPath);

        var engine = ml.Model.CreatePredictionEngine<Request, Generated>(model);
        for (uint seed = 0; seed < 3; seed++)
        {
            var image = engine.Predict(new Request { Seed = seed }).GeneratedImage;
            Report($"generated-{seed}", image, outFolder);
        }

        IDataView files = ImageFiles(ml, imageFolder);
        var inpaint = ml.Transforms.LoadImages("Image", imageFolder, "Path")
            .Append(ml.Transforms.ResizeImages("Image", Size, Size))
            .Append(ml.Generative.Inpaint(model, "Inpainted", "Image", maskColumnName: null,
                new InpaintOptions { Mask = Microsoft.ML.Diffusion.InpaintMaskKind.Wide, Steps = 10, JumpLength = 2, Resamplings = 2, Seed = 1 }));
        foreach (var row in ml.Data.CreateEnumerable<InpaintedRow>(inpaint.Fit(files).Transform(files), reuseRowObject: false).Take(2))
            Report($"inpainted-{Path.GetFileNameWithoutExtension(row.Path)}", row.Inpainted, outFolder);

        var upscale = ml.Transforms.LoadImages("Image", imageFolder, "Path")
            .Append(ml.Transforms.ResizeImages("Image", Size / 2, Size / 2))
            .Append(ml.Generative.Upscale(model, "Upscaled", "Image", new UpscaleOptions { Factor = 2, Steps = 10, JumpLength = 2, Resamplings = 2, Seed = 1 }));
        foreach (var row in ml.Data.CreateEnumerable<UpscaledRow>(upscale.Fit(files).Transform(files), reuseRowObject: false).Take(2))
            Report($"upscaled-{Path.GetFileNameWithoutExtension(row.Path)}", row.Upscaled, outFolder);
        Console.WriteLine($"use: done in {clock.Elapsed.TotalSeconds:F1} s");
        return 0;
    }
    default:
        Console.Error.WriteLine("usage: train IMAGES MODEL.zip | use MODEL.zip IMAGES OUT");
        return 2;
}

static IDataView ImageFiles(MLContext ml, string folder) =>
    ml.Data.LoadFromEnumerable(Directory.GetFiles(folder, "*.png").Order(StringComparer.Ordinal)
        .Select(f => new ImageFile { Path = Path.GetFileName(f) }).ToList());

static void Report(string name, MLImage image, string folder)
{
    string path = Path.Combine(folder, name + ".png");
    image.Save(path);
    var pixels = image.Pixels;
    double mean = 0;
    for (int i = 0; i < pixels.Length; i += 4) mean += pixels[i];
    Console.WriteLine($"{name}: {image.Width}x{image.Height} mean {mean / (pixels.Length / 4):F1} -> {path}");
}

sealed class ImageFile { public string Path { get; set; } = ""; }
sealed class Request { public uint Seed { get; set; } }
sealed class Generated { [ImageType(16, 16)] public MLImage GeneratedImage { get; set; } = null!; }
sealed class InpaintedRow { public string Path { get; set; } = ""; [ImageType(16, 16)] public MLImage Inpainted { get; set; } = null!; }
sealed class UpscaledRow { public string Path { get; set; } = ""; [ImageType(16, 16)] public MLImage Upscaled { get; set; } = null!; }
