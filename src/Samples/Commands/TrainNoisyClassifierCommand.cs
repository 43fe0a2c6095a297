using System.CommandLine;
using System.Diagnostics;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Samples.Data;
using Microsoft.ML.Diffusion.Training;
using Spectre.Console;
using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>train-noisy-classifier</c>: trains the time-conditioned classifier of classifier guidance (Dhariwal &amp; Nichol 2021) on
/// Fashion-MNIST images noised with a diffusion model's schedule (default: the bundled unconditional model) and saves it with
/// mlContext.Model.Save; <c>generate --classifier</c> and <c>evaluate-guidance --noisy-classifier</c> use it.
/// </summary>
public static class TrainNoisyClassifierCommand
{
    /// <summary>The bundled noisy classifier for the bundled unconditional model.</summary>
    public static string DefaultPath => Path.Combine(AppContext.BaseDirectory, "Models", "fashion-mnist-noisy-classifier.zip");

    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "The diffusion model zip to guide (its schedule, T and image size are used)", DefaultValueFactory = _ => DemoCommand.DefaultModelPath };
        var data = new Option<string>("--data") { Description = "Folder with the Fashion-MNIST IDX files", DefaultValueFactory = _ => FashionMnist.DefaultDirectory };
        var limit = new Option<int?>("--limit") { Description = "Train on the first N images only" }.AtLeast(1);
        var epochs = new Option<int>("--epochs") { Description = "Passes over the data", DefaultValueFactory = _ => 1 }.AtLeast(1);
        var batch = new Option<int>("--batch-size") { Description = "Images per optimizer step", DefaultValueFactory = _ => 64 }.AtLeast(1);
        var baseChannels = new Option<int>("--base-channels") { Description = "Width of the first level", DefaultValueFactory = _ => 32 };
        var resBlocks = new Option<int>("--res-blocks") { Description = "Residual blocks per level", DefaultValueFactory = _ => 1 };
        var lr = new Option<float>("--lr") { Description = "AdamW learning rate", DefaultValueFactory = _ => 3e-4f };
        var weightDecay = new Option<float>("--weight-decay") { Description = "AdamW weight decay", DefaultValueFactory = _ => 0.05f };
        var seed = new Option<int>("--seed") { Description = "Seed of weights, timesteps, noise and data order", DefaultValueFactory = _ => 1 };
        var maxSteps = new Option<long?>("--max-steps") { Description = "Stop after this many optimizer steps" }.AtLeast(1L);
        var output = new Option<string>("--out") { Description = "Classifier zip to write", DefaultValueFactory = _ => "noisy-classifier.zip" };

        var command = new Command("train-noisy-classifier", "Train the noisy classifier of classifier guidance (Dhariwal & Nichol 2021) on Fashion-MNIST")
        {
            model, data, limit, epochs, batch, baseChannels, resBlocks, lr, weightDecay, seed, maxSteps, output,
        };
        command.SetAction(parse =>
        {
            string modelPath = parse.GetValue(model)!, dir = parse.GetValue(data)!;
            var ml = new MLContext(seed: parse.GetValue(seed));
            using var diffusion = InputFiles.LoadDiffusionModel(ml, modelPath);
            InputFiles.RequireFashionMnist(dir, "train");
            string imagesPath = FashionMnist.ImagesPath(dir, "train");
            int? n = parse.GetValue(limit);
            int total = n ?? IdxReader.ReadImageHeader(imagesPath).Count;
            int e = parse.GetValue(epochs), b = parse.GetValue(batch);
            var images = FashionMnist.Load(ml, dir, "train", n);
            using var cts = ConsoleProgress.CancelOnCtrlC();
            var options = new NoisyClassifierTrainer.Options
            {
                DiffusionModel = diffusion, ImageColumnName = "Image", LabelColumnName = "Label",
                NumClasses = FashionMnist.ClassNames.Length,             // the IDX label file gives a UInt32 column of classes 0..9
                BaseChannels = parse.GetValue(baseChannels), NumResBlocks = parse.GetValue(resBlocks), Epochs = e, BatchSize = b,
                LearningRate = parse.GetValue(lr), WeightDecay = parse.GetValue(weightDecay), Seed = parse.GetValue(seed),
                MaxSteps = parse.GetValue(maxSteps), CancellationToken = cts.Token,
            };
            long steps = (long)Math.Ceiling(total / (double)b) * e;
            if (options.MaxSteps is long m) steps = Math.Min(steps, m);
            AnsiConsole.MarkupLine($"Training a noisy classifier for {Markup.Escape(Path.GetFileName(modelPath))} ({diffusion.Config.Schedule} schedule, " +
                                   $"T = {diffusion.Timesteps}) on [bold]{total:N0}[/] images: {e} epoch(s), batch {b}, {steps:N0} steps.");
            var watch = Stopwatch.StartNew();
            NoisyClassifierModel classifier;
            try
            {
                classifier = ConsoleProgress.Run(ctx =>
                {
                    var task = ctx.AddTask("Training", maxValue: steps);
                    options.Progress = new SyncProgress<TrainingProgress>(p =>
                    {
                        task.Value = p.Step;
                        task.Description = $"Training: epoch {p.Epoch}/{p.Epochs}, cross-entropy {p.AverageLoss:F3}, {p.ImagesPerSecond:F0} img/s";
                    });
                    return ml.Generative.NoisyClassifier(options).Fit(images);
                });
            }
            catch (OperationCanceledException)
            {
                AnsiConsole.MarkupLine("[yellow]Training cancelled.[/]");
                return 130;
            }
            using (classifier)
            {
                string outPath = parse.GetValue(output)!;
                string? outDir = Path.GetDirectoryName(Path.GetFullPath(outPath));
                if (outDir != null) Directory.CreateDirectory(outDir);
                ml.Model.Save(classifier, images.Schema, outPath);
                AnsiConsole.MarkupLine($"Trained {classifier.Config.TrainedSteps:N0} steps ({classifier.ParameterCount:N0} parameters) in {watch.Elapsed.TotalMinutes:F1} min; " +
                                       $"wrote [bold]{Markup.Escape(outPath)}[/] ({new FileInfo(outPath).Length / 1e6:F1} MB).");
                var (accuracy, count) = CleanAccuracy(ml, classifier, dir);
                if (count > 0) AnsiConsole.MarkupLine($"Accuracy on {count:N0} clean Fashion-MNIST test images (t = 0): [bold]{accuracy:P1}[/].");
            }
            return 0;
        });
        return command;
    }

    /// <summary>The classifier's accuracy on the clean test split (t = 0), through its Transform; (NaN, 0) without the test files.</summary>
    private static (double Accuracy, int Count) CleanAccuracy(MLContext ml, NoisyClassifierModel classifier, string dir)
    {
        IDataView test;
        try
        {
            test = FashionMnist.Load(ml, dir, "t10k");
        }
        catch (FileNotFoundException)
        {
            return (double.NaN, 0);
        }
        var scored = classifier.Transform(test);
        var truth = test.GetColumn<uint>("Label").ToArray();
        var predicted = scored.GetColumn<uint>(classifier.PredictedLabelColumnName).ToArray();
        int right = Enumerable.Range(0, truth.Length).Count(i => predicted[i] == truth[i] + 1);   // key k + 1 = class k
        return (right / (double)truth.Length, truth.Length);
    }
}
