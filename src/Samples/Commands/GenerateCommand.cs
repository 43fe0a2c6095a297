using MLImage = Microsoft.ML.Data.MLImage;
using System.CommandLine;
using System.Diagnostics;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Sampling;
using Spectre.Console;
using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary><c>generate</c>: loads a model zip and writes a grid of generated images.</summary>
public static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model zip written by train", Required = true };
        var count = new Option<int>("--count") { Description = "Images to generate", DefaultValueFactory = _ => 16 }.AtLeast(1);
        var sampler = new Option<string>("--sampler") { Description = SamplerDescription, DefaultValueFactory = _ => "ddim" };
        sampler.OneOf(SamplerNames);
        var steps = new Option<int?>("--steps") { Description = StepsDescription }.AtLeast(1);
        var spacing = new Option<TimestepSpacing?>("--spacing") { Description = "Timestep spacing: Leading, Trailing or Linspace (default: the sampler's)" };
        var eta = new Option<float>("--eta") { Description = "DDIM eta (0 deterministic, 1 DDPM-like)", DefaultValueFactory = _ => 0f };
        var seed = new Option<uint>("--seed") { Description = "Seed of the first image (image i uses seed + i)", DefaultValueFactory = _ => 0u };
        var output = new Option<string>("--out") { Description = "Grid PNG to write", DefaultValueFactory = _ => "grid.png" };
        var batch = new Option<int>("--batch-size") { Description = "Images denoised together", DefaultValueFactory = _ => 64 }.AtLeast(1);
        var label = new Option<int?>("--label") { Description = "Class of every image (class-conditional models, e.g. 7 = Sneaker)" };
        var guidance = new Option<float>("--guidance") { Description = "Classifier-free guidance weight w: 0 unconditional, 1 conditional, > 1 guided", DefaultValueFactory = _ => 1f };
        var classGrid = new Option<bool>("--class-grid") { Description = "One row per class, --count images each (class-conditional models)" };
        var precision = new Option<Precision>("--precision") { Description = "Fp32 or Bf16Mixed (bfloat16 network, float32 sampler)", DefaultValueFactory = _ => Precision.Fp32 };
        var engine = EngineOption.Create();
        var classifier = new Option<string?>("--classifier") { Description = "Noisy classifier zip (train-noisy-classifier) for classifier guidance (Dhariwal & Nichol 2021); needs --label or --class-grid" };
        var classifierScale = new Option<float>("--classifier-scale") { Description = "Classifier guidance scale s (0 = none; 1-10 typical)", DefaultValueFactory = _ => 1f };
        var karras = new Option<bool>("--karras-sigmas") { Description = "Karras noise levels for dpm-solver++, dpm-solver++-sde, unipc (diffusers' use_karras_sigmas)" };
        var lu = new Option<bool>("--lu-lambdas") { Description = "Noise levels uniform in log-SNR for the same solvers (diffusers' use_lu_lambdas)" };
        var finalSigmas = new Option<FinalSigmasType>("--final-sigmas") { Description = "Where their last step lands: Zero (x0) or SigmaMin (diffusers' final_sigmas_type)", DefaultValueFactory = _ => FinalSigmasType.Zero };

        var command = new Command("generate", "Generate a grid of images with a trained model")
        {
            model, count, sampler, steps, spacing, eta, seed, output, batch, label, guidance, classGrid, precision, engine, classifier, classifierScale,
            karras, lu, finalSigmas,
        };
        command.SetAction(parse =>
        {
            string path = parse.GetValue(model)!;
            string? classifierPath = parse.GetValue(classifier);
            InputFiles.RequireFile(path, "--model", InputFiles.DiffusionModelFile);
            if (classifierPath is not null) InputFiles.RequireFile(classifierPath, "--classifier", NoisyClassifierFile);
            var ml = new MLContext();
            var diffusion = InputFiles.LoadDiffusionModel(ml, path);
            NoisyClassifierModel? noisyClassifier = classifierPath is null ? null
                : InputFiles.LoadModel<NoisyClassifierModel>(ml, classifierPath, "--classifier", NoisyClassifierFile);
            using var cts = ConsoleProgress.CancelOnCtrlC();
            var options = new SamplerOptions
            {
                // Without --sampler, a flow-matching model samples with its own default sampler (flow-euler), any other with DDIM.
                Sampler = diffusion.Objective != DiffusionObjective.Ddpm && parse.GetResult(sampler) is null or { Implicit: true }
                    ? diffusion.DefaultSampler.Sampler
                    : ParseSampler(parse.GetValue(sampler)!),
                Steps = parse.GetValue(steps), Spacing = parse.GetValue(spacing), Eta = parse.GetValue(eta), Seed = parse.GetValue(seed),
                BatchSize = parse.GetValue(batch), CancellationToken = cts.Token, GuidanceScale = parse.GetValue(guidance),
                Precision = parse.GetValue(precision), Engine = parse.GetValue(engine), Classifier = noisyClassifier, ClassifierScale = parse.GetValue(classifierScale),
                UseKarrasSigmas = parse.GetValue(karras), UseLuLambdas = parse.GetValue(lu), FinalSigmasType = parse.GetValue(finalSigmas),
            };
            string outPath = parse.GetValue(output)!;
            int n = parse.GetValue(count);
            int? fixedLabel = parse.GetValue(label);
            bool perClass = parse.GetValue(classGrid);
            // With --classifier, an unconditional model takes the classifier's labels.
            int classes = diffusion.NumClasses > 0 ? diffusion.NumClasses : noisyClassifier?.NumClasses ?? 0;
            if (options.GuidanceScale != 1f && diffusion.NumClasses == 0)
            {
                throw new CliException("--guidance needs a class-conditional model (train --conditional); use --classifier for classifier guidance.");
            }
            if ((fixedLabel is not null || perClass) && classes == 0)
            {
                throw new CliException("--label and --class-grid need a class-conditional model (train --conditional) or --classifier.");
            }
            if (noisyClassifier is not null && fixedLabel is null && !perClass)
            {
                throw new CliException("--classifier steers towards a class: give --label or --class-grid.");
            }
            if (fixedLabel is int fl && (fl < 0 || fl >= classes))
            {
                throw new CliException($"--label {fl} is outside the classes 0..{classes - 1}.");
            }
            // --class-grid: row k holds n images of class k; --label: n images of one class; else no labels.
            int[]? labels = perClass
                ? Enumerable.Range(0, classes).SelectMany(k => Enumerable.Repeat(k, n)).ToArray()
                : fixedLabel is int one ? Enumerable.Repeat(one, n).ToArray() : null;
            int total = labels?.Length ?? n;
            var watch = Stopwatch.StartNew();
            try
            {
                var images = labels is null
                    ? Generate(diffusion, n, options)
                    : WithSamplingProgress(diffusion, total, options, () => diffusion.Generate(labels, options));
                using var grid = ImageGrid.Create(images, columns: perClass ? n : null);
                SavePng(grid, outPath);
                foreach (var img in images) img.Dispose();
            }
            catch (OperationCanceledException)
            {
                AnsiConsole.MarkupLine("[yellow]Generation cancelled.[/]");
                return 130;
            }
            finally
            {
                noisyClassifier?.Dispose();
            }
            AnsiConsole.MarkupLine($"Generated {total} images ({options.Sampler}, {options.ResolveSteps(diffusion.Timesteps)} steps) in " +
                                   $"{watch.Elapsed.TotalSeconds:F1} s; wrote [bold]{Markup.Escape(outPath)}[/].");
            return 0;
        });
        return command;
    }

    /// <summary>The names <c>--sampler</c> accepts, from the sampler registry.</summary>
    public static readonly string[] SamplerNames = SamplerRegistry.CliNames.ToArray();

    /// <summary><c>--sampler</c>'s help: the registry's names.</summary>
    public static string SamplerDescription => "Sampler: " + string.Join(", ", SamplerNames);

    /// <summary><c>--steps</c>' help: each sampler's default, from the registry (for T = 1000).</summary>
    public static string StepsDescription =>
        "Solver steps (default, for T = 1000: " + string.Join(", ", SamplerRegistry.All.Select(StepsHelp)) + ")";

    private static string StepsHelp(SamplerInfo row)
    {
        int steps = row.DefaultSteps(1000), calls = SamplerRegistry.NetworkCalls(row, steps);
        return $"{steps} for {row.CliName}" + (calls != steps ? $" ({calls} network calls)" : string.Empty);
    }

    /// <summary>What <c>--classifier</c> (and evaluate-guidance's <c>--noisy-classifier</c>) expects.</summary>
    public const string NoisyClassifierFile = "a noisy classifier zip written by train-noisy-classifier";

    /// <summary>The sampler named on the command line.</summary>
    public static SamplerKind ParseSampler(string name) =>
        SamplerRegistry.FindByCliName(name)?.Kind
        ?? throw new CliException($"--sampler '{name}' is not recognised; expected one of {string.Join(", ", SamplerNames)}.");

    /// <summary>Generates with a progress bar of all denoising steps.</summary>
    public static IReadOnlyList<MLImage> Generate(DiffusionModel model, int count, SamplerOptions options) =>
        WithSamplingProgress(model, count, options, () => model.Generate(count, options));

    /// <summary>Runs <paramref name="sample"/> (which samples <paramref name="count"/> images with <paramref name="options"/>)
    /// under a progress bar of all its denoising steps.</summary>
    public static T WithSamplingProgress<T>(DiffusionModel model, int count, SamplerOptions options, Func<T> sample)
    {
        int perBatch = options.ResolveSteps(model.Timesteps);
        int batches = (count + options.BatchSize - 1) / options.BatchSize;
        return ConsoleProgress.Run(ctx =>
        {
            var task = ctx.AddTask($"Sampling {count} images", maxValue: perBatch * batches);
            options.Progress = new SyncProgress<SamplingProgress>(p =>
            {
                // A Heun step takes two network calls: the reports' total is the number of loop positions per batch.
                if (p.TotalSteps != perBatch)
                {
                    perBatch = p.TotalSteps;
                    task.MaxValue = perBatch * batches;
                }

                task.Value = p.BatchIndex * perBatch + p.Step;
            });
            return sample();
        });
    }

    /// <summary>Writes an image as PNG (creating the folder); a path that cannot be written throws a <see cref="CliException"/> naming it.</summary>
    public static void SavePng(MLImage image, string path)
    {
        try
        {
            string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
            if (dir != null) Directory.CreateDirectory(dir);
            image.Save(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new CliException($"Could not write the image '{path}' (expected a writable .png or .jpg path): {CliErrors.OneLine(e.Message)}", e);
        }
    }
}
