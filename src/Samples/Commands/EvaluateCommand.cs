using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Diffusion.Evaluation;
using Microsoft.ML.Diffusion.Samples.Data;
using Spectre.Console;
using TorchSharp;
using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>evaluate</c>: generates N images with a model and compares them with N Fashion-MNIST test images by a FID-like
/// Frechet distance and KID in the feature space of the <see cref="FeatureClassifier"/> (the Inception network of the
/// standard FID is not available offline, so the figures are not comparable with published FIDs).
/// </summary>
public static class EvaluateCommand
{
    /// <summary>The classifier weights shipped next to the executable.</summary>
    public static string DefaultClassifierPath => Path.Combine(AppContext.BaseDirectory, "Models", "fashion-mnist-classifier.bin");

    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model zip written by train", DefaultValueFactory = _ => DemoCommand.DefaultModelPath };
        var data = new Option<string>("--data") { Description = "Folder with the Fashion-MNIST IDX files", DefaultValueFactory = _ => FashionMnist.DefaultDirectory };
        var count = new Option<int>("--count") { Description = "Generated images, and test images compared with them", DefaultValueFactory = _ => 1000 }.AtLeast(2);
        var sampler = new Option<string>("--sampler") { Description = GenerateCommand.SamplerDescription, DefaultValueFactory = _ => "ddim" };
        sampler.OneOf(GenerateCommand.SamplerNames);
        var steps = new Option<int?>("--steps") { Description = GenerateCommand.StepsDescription }.AtLeast(1);
        var seed = new Option<uint>("--seed") { Description = "Seed of the first image (image i uses seed + i)", DefaultValueFactory = _ => 0u };
        var json = new Option<string?>("--json") { Description = "Also write the figures to this JSON file" };
        var classifier = new Option<string>("--classifier") { Description = "Feature classifier weights (train-classifier)", DefaultValueFactory = _ => DefaultClassifierPath };
        var batch = new Option<int>("--batch-size") { Description = "Images denoised together", DefaultValueFactory = _ => 64 }.AtLeast(1);
        var precision = new Option<Precision>("--precision") { Description = "Number format of the network while sampling: Fp32 or Bf16Mixed", DefaultValueFactory = _ => Precision.Fp32 };
        var engine = EngineOption.Create();
        var baseline = new Option<bool>("--baseline")
        {
            Description = "Also score the first --count training images against the same test images: the distance a model that reproduced the data would reach at this count (the floor that the small-sample bias sets)",
        };
        var resume = new Option<string?>("--resume-dir")
        {
            Description = "Keep the generated images in this folder, one file per batch, and reuse them when the same evaluation runs again: an interrupted run goes on where it stopped, and a larger --count adds to the images there",
        };
        var command = new Command("evaluate", "FID-like Frechet distance and KID of generated images against the test split")
            { model, data, count, sampler, steps, seed, json, classifier, batch, precision, engine, baseline, resume };
        command.SetAction(parse => Run(parse.GetValue(model)!, parse.GetValue(data)!, parse.GetValue(count), parse.GetValue(sampler)!,
            parse.GetValue(steps), parse.GetValue(seed), parse.GetValue(json), parse.GetValue(classifier)!, parse.GetValue(batch), parse.GetValue(precision),
            parse.GetValue(engine), parse.GetValue(baseline), parse.GetValue(resume)));
        return command;
    }

    public static int Run(string modelPath, string dataDir, int count, string samplerName, int? steps, uint seed, string? jsonPath,
        string classifierPath, int batchSize, Precision precision = Precision.Fp32, InferenceEngine engine = EngineOption.Default, bool baseline = false,
        string? resumeDir = null)
    {
        if (count < 2) throw new CliException($"--count is {count}; expected a value >= 2.");
        InputFiles.RequireFile(modelPath, "--model", InputFiles.DiffusionModelFile);
        InputFiles.RequireFile(classifierPath, "--classifier", ClassifierFile);
        var ml = new MLContext();
        using var diffusion = InputFiles.LoadDiffusionModel(ml, modelPath);
        using var net = LoadClassifier(classifierPath);
        if (baseline) InputFiles.RequireFashionMnist(dataDir, "t10k", "train");
        else InputFiles.RequireFashionMnist(dataDir, "t10k");

        var (testX, testY) = FashionMnist.LoadTensors(dataDir, "t10k");
        using var _1 = testX; using var _2 = testY;
        if (count > testX.shape[0])
        {
            throw new CliException($"--count {count} exceeds the {testX.shape[0]} test images.");
        }
        double accuracy = TrainClassifierCommand.Accuracy(net, testX, testY);

        using var cts = ConsoleProgress.CancelOnCtrlC();
        var options = new SamplerOptions
        {
            Sampler = GenerateCommand.ParseSampler(samplerName), Steps = steps, Seed = seed, BatchSize = batchSize, CancellationToken = cts.Token,
            Precision = precision, Engine = engine,
        };
        int resolvedSteps = options.ResolveSteps(diffusion.Timesteps);
        var seeds = SampleScores.Seeds(seed, count);
        var cache = resumeDir == null ? null
            : SampleCache.Open(resumeDir, SampleCache.Settings(modelPath, samplerName, resolvedSteps, precision, engine, seed, batchSize));
        Tensor generated;
        var watch = Stopwatch.StartNew();
        try
        {
            generated = cache != null ? cache.Generate(diffusion, seeds, options)
                : GenerateCommand.WithSamplingProgress(diffusion, count, options, () => diffusion.GenerateTensor(seeds, options));
        }
        catch (OperationCanceledException)
        {
            AnsiConsole.MarkupLine("[yellow]Evaluation cancelled.[/]");
            return 130;
        }
        double samplingSeconds = watch.Elapsed.TotalSeconds;
        using var _3 = generated;

        using var scores = new SampleScores(net, testX, count);
        var (fd, kid) = scores.Distances(generated);
        (double Fd, double Kid)? floor = null;
        if (baseline)
        {
            // Real images against real images: what the distance reads for a perfect model at this count.
            var (trainX, trainY) = FashionMnist.LoadTensors(dataDir, "train", count);
            using (trainX) using (trainY) floor = scores.Distances(trainX);
        }

        var table = new Table().AddColumn("Metric").AddColumn(new TableColumn("Value").RightAligned());
        table.AddRow("sampler", $"{samplerName}, {resolvedSteps} steps, {precision}, {engine}");
        table.AddRow("images", $"{count} generated vs {count} test");
        table.AddRow("Frechet distance (FID-like)", $"{fd:F3}");
        table.AddRow("KID (unbiased MMD^2)", $"{kid:F4}");
        if (floor is { } f)
        {
            table.AddRow($"Frechet distance of {count} training images (floor)", $"{f.Fd:F3}");
            table.AddRow($"KID of {count} training images", $"{f.Kid:F4}");
        }
        table.AddRow("sampling time", $"{samplingSeconds:F1} s");
        table.AddRow("classifier test accuracy", $"{accuracy:P2}");
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine("[grey]Features: the 128-d penultimate layer of the Fashion-MNIST classifier, not Inception-v3; not comparable with published FIDs.[/]");

        if (jsonPath != null)
        {
            var doc = new JsonObject
            {
                ["sampler"] = samplerName,
                ["steps"] = resolvedSteps,
                ["precision"] = precision.ToString(),
                ["engine"] = engine.ToString(),
                ["model"] = Path.GetFileName(modelPath),
                ["count"] = count,
                ["frechet_distance"] = fd,
                ["kid"] = kid,
                ["wall_seconds_sampling"] = Math.Round(samplingSeconds, 3),
                ["classifier_accuracy_on_test"] = accuracy,
            };
            if (floor is { } b)
            {
                doc["train_images_frechet_distance"] = b.Fd;
                doc["train_images_kid"] = b.Kid;
            }
            string? dir = Path.GetDirectoryName(Path.GetFullPath(jsonPath));
            if (dir != null) Directory.CreateDirectory(dir);
            File.WriteAllText(jsonPath, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
            AnsiConsole.MarkupLine($"wrote {Markup.Escape(jsonPath)}");
        }
        return 0;
    }

    /// <summary>What <c>--classifier</c> expects.</summary>
    public const string ClassifierFile = "a feature classifier weights file written by train-classifier";

    /// <summary>The feature classifier in <paramref name="path"/> (the <c>--classifier</c> option), in eval mode.</summary>
    public static FeatureClassifier LoadClassifier(string path)
    {
        InputFiles.RequireFile(path, "--classifier", ClassifierFile);
        var net = new FeatureClassifier();
        try
        {
            net.load(path);
        }
        catch (Exception e)
        {
            net.Dispose();
            throw InputFiles.Bad("--classifier", path, ClassifierFile, e);
        }
        net.eval();
        return net;
    }
}
