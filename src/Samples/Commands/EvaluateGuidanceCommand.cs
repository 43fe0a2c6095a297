using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Diffusion.Evaluation;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Samples.Data;
using Spectre.Console;
using TorchSharp;
using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>evaluate-guidance</c>: for a class-conditional model, generates N images of every class at each classifier-free
/// guidance scale w (Ho &amp; Salimans 2022) and reports the accuracy of the Fashion-MNIST <see cref="FeatureClassifier"/> on
/// them, per class: conditioning shows as accuracy far above chance (10%), and guidance should raise it.
/// Optionally writes a class grid (one row per class) at one guidance scale. With <c>--noisy-classifier</c> the scales are
/// classifier guidance scales s (Dhariwal &amp; Nichol 2021) instead, and the model may be unconditional (the bundled one by default).
/// </summary>
public static class EvaluateGuidanceCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Class-conditional model zip (train --conditional); with --noisy-classifier any model (default: the bundled unconditional one)" };
        var noisy = new Option<string?>("--noisy-classifier") { Description = "Noisy classifier zip (train-noisy-classifier): evaluate classifier guidance; the scales are then s" };
        var perClass = new Option<int>("--per-class") { Description = "Images generated per class and guidance scale", DefaultValueFactory = _ => 50 }.AtLeast(1);
        var guidance = new Option<string>("--guidance") { Description = "Comma-separated guidance scales w", DefaultValueFactory = _ => "0,1,3,5" };
        var sampler = new Option<string>("--sampler") { Description = GenerateCommand.SamplerDescription, DefaultValueFactory = _ => "dpm-solver++" };
        sampler.OneOf(GenerateCommand.SamplerNames);
        var steps = new Option<int?>("--steps") { Description = GenerateCommand.StepsDescription }.AtLeast(1);
        var seed = new Option<uint>("--seed") { Description = "Seed of the first image of each class (image i uses seed + i)", DefaultValueFactory = _ => 0u };
        var classifier = new Option<string>("--classifier") { Description = "Classifier weights (train-classifier)", DefaultValueFactory = _ => EvaluateCommand.DefaultClassifierPath };
        var json = new Option<string?>("--json") { Description = "Also write the figures to this JSON file" };
        var markdown = new Option<string?>("--markdown") { Description = "Also write the table as Markdown to this file" };
        var grid = new Option<string?>("--grid") { Description = "Also write a class grid PNG (one row per class, --grid-columns images) at --grid-guidance" };
        var gridColumns = new Option<int>("--grid-columns") { Description = "Images per class in the grid", DefaultValueFactory = _ => 10 }.AtLeast(1);
        var gridGuidance = new Option<float>("--grid-guidance") { Description = "Guidance scale of the grid", DefaultValueFactory = _ => 3f };
        var command = new Command("evaluate-guidance", "Classifier accuracy on generated images per class at several classifier-free (or, with --noisy-classifier, classifier) guidance scales")
            { model, noisy, perClass, guidance, sampler, steps, seed, classifier, json, markdown, grid, gridColumns, gridGuidance };
        command.SetAction(parse => Run(parse.GetValue(model), parse.GetValue(noisy), parse.GetValue(perClass), parse.GetValue(guidance)!, parse.GetValue(sampler)!,
            parse.GetValue(steps), parse.GetValue(seed), parse.GetValue(classifier)!, parse.GetValue(json), parse.GetValue(markdown),
            parse.GetValue(grid), parse.GetValue(gridColumns), parse.GetValue(gridGuidance)));
        return command;
    }

    public static int Run(string? modelArgument, string? noisyPath, int perClass, string guidanceList, string samplerName, int? steps, uint seed, string classifierPath,
        string? jsonPath, string? markdownPath, string? gridPath, int gridColumns, float gridGuidance)
    {
        if (modelArgument is null && noisyPath is null)
        {
            throw new CliException("Give --model (a class-conditional model) or --noisy-classifier (classifier guidance).");
        }
        string modelPath = modelArgument ?? DemoCommand.DefaultModelPath;
        string what = noisyPath is null ? "w" : "s";
        float[] scales;
        try
        {
            scales = guidanceList.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(s => float.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        }
        catch (FormatException)
        {
            throw new CliException($"--guidance '{guidanceList}' is not a comma-separated list of numbers (e.g. 0,1,3,5).");
        }
        if (perClass < 1 || scales.Length == 0 || scales.Any(w => !(w >= 0)))
        {
            throw new CliException("--per-class must be >= 1 and --guidance a non-empty list of scales >= 0.");
        }
        InputFiles.RequireFile(modelPath, "--model", InputFiles.DiffusionModelFile);
        if (noisyPath is not null) InputFiles.RequireFile(noisyPath, "--noisy-classifier", GenerateCommand.NoisyClassifierFile);
        InputFiles.RequireFile(classifierPath, "--classifier", EvaluateCommand.ClassifierFile);

        var ml = new MLContext();
        using var diffusion = InputFiles.LoadDiffusionModel(ml, modelPath);
        using var noisy = noisyPath is null ? null
            : InputFiles.LoadModel<NoisyClassifierModel>(ml, noisyPath, "--noisy-classifier", GenerateCommand.NoisyClassifierFile);
        int classes = noisy?.NumClasses ?? diffusion.NumClasses;
        if (classes != FeatureClassifier.ClassCount)
        {
            throw new CliException(noisy is null
                ? $"--model '{modelPath}' has {classes} classes; this command needs a Fashion-MNIST class-conditional model (10 classes, train --conditional)."
                : $"--noisy-classifier '{noisyPath}' has {classes} classes; this command needs one trained on Fashion-MNIST (10 classes, train-noisy-classifier).");
        }
        using var net = EvaluateCommand.LoadClassifier(classifierPath);
        using var cts = ConsoleProgress.CancelOnCtrlC();

        // Every class at every scale: classes x perClass images, seeds seed .. seed + perClass - 1 for each class.
        var (seeds, labels) = SampleScores.PerClassRequests(classes, perClass, seed);
        var accuracy = new double[scales.Length, classes];
        var seconds = new double[scales.Length];
        try
        {
            for (int g = 0; g < scales.Length; g++)
            {
                var options = Options(samplerName, steps, scales[g], noisy);
                options.BatchSize = 100;
                options.CancellationToken = cts.Token;
                var watch = Stopwatch.StartNew();
                using var images = GenerateCommand.WithSamplingProgress(diffusion, seeds.Length, options,
                    () => diffusion.GenerateTensor(seeds, labels, options));
                seconds[g] = watch.Elapsed.TotalSeconds;
                var perClassAccuracy = SampleScores.PerClassAccuracy(net, images, classes, perClass);
                for (int c = 0; c < classes; c++)
                    accuracy[g, c] = perClassAccuracy[c];
            }

            if (gridPath != null)
            {
                var options = Options(samplerName, steps, gridGuidance, noisy);
                options.Seed = seed;
                var gridLabels = Enumerable.Range(0, classes * gridColumns).Select(i => i / gridColumns).ToArray();
                var tiles = GenerateCommand.WithSamplingProgress(diffusion, gridLabels.Length, options, () => diffusion.Generate(gridLabels, options));
                using var picture = ImageGrid.Create(tiles, columns: gridColumns);
                GenerateCommand.SavePng(picture, gridPath);
                foreach (var t in tiles) t.Dispose();
                AnsiConsole.MarkupLine($"wrote {Markup.Escape(gridPath)} (one row per class, {what} = {gridGuidance})");
            }
        }
        catch (OperationCanceledException)
        {
            AnsiConsole.MarkupLine("[yellow]Evaluation cancelled.[/]");
            return 130;
        }

        var table = new Table().AddColumn(what);
        foreach (var name in FashionMnist.ClassNames) table.AddColumn(new TableColumn(name).RightAligned());
        table.AddColumn(new TableColumn("mean").RightAligned()).AddColumn(new TableColumn("time").RightAligned());
        var md = new StringBuilder();
        md.AppendLine($"| {what} | {string.Join(" | ", FashionMnist.ClassNames)} | mean | sampling time |");
        md.AppendLine($"|---|{string.Concat(Enumerable.Repeat("---:|", classes))}---:|---:|");
        var rows = new JsonArray();
        for (int g = 0; g < scales.Length; g++)
        {
            var perClassAcc = Enumerable.Range(0, classes).Select(c => accuracy[g, c]).ToArray();
            double mean = perClassAcc.Average();
            var cells = perClassAcc.Select(a => $"{a:P0}").ToList();
            table.AddRow(new[] { scales[g].ToString(CultureInfo.InvariantCulture) }.Concat(cells).Append($"{mean:P1}").Append($"{seconds[g]:F0} s").ToArray());
            md.AppendLine($"| {scales[g].ToString(CultureInfo.InvariantCulture)} | {string.Join(" | ", cells)} | {mean:P1} | {seconds[g]:F0} s |");
            rows.Add(new JsonObject
            {
                [noisy is null ? "guidance" : "classifier_scale"] = scales[g],
                ["accuracy_per_class"] = new JsonArray(perClassAcc.Select(a => (JsonNode)JsonValue.Create(Math.Round(a, 4))!).ToArray()),
                ["accuracy_mean"] = Math.Round(mean, 4),
                ["wall_seconds_sampling"] = Math.Round(seconds[g], 1),
            });
        }
        AnsiConsole.Write(table);
        string settings = $"{samplerName}, {steps?.ToString(CultureInfo.InvariantCulture) ?? "default"} steps, {perClass} images per class, seeds {seed}..{seed + perClass - 1}" +
            (noisy is null ? ", classifier-free guidance w" : $", classifier guidance s with {Path.GetFileName(noisyPath)} on {Path.GetFileName(modelPath)}");
        AnsiConsole.MarkupLine($"[grey]{Markup.Escape(settings)}; classifier: the evaluate command's Fashion-MNIST CNN. Chance is 10%.[/]");

        if (markdownPath != null)
        {
            WriteFile(markdownPath, $"Classifier accuracy on generated images ({settings}):\n\n{md}");
            AnsiConsole.MarkupLine($"wrote {Markup.Escape(markdownPath)}");
        }
        if (jsonPath != null)
        {
            var doc = new JsonObject
            {
                ["model"] = Path.GetFileName(modelPath), ["noisy_classifier"] = noisyPath is null ? null : Path.GetFileName(noisyPath), ["sampler"] = samplerName, ["steps"] = steps, ["per_class"] = perClass,
                ["classes"] = new JsonArray(FashionMnist.ClassNames.Select(n => (JsonNode)JsonValue.Create(n)!).ToArray()), ["rows"] = rows,
            };
            WriteFile(jsonPath, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            AnsiConsole.MarkupLine($"wrote {Markup.Escape(jsonPath)}");
        }
        return 0;
    }

    /// <summary>The sampler at one scale: classifier-free guidance w without a noisy classifier, else classifier guidance s
    /// (the class-free weight left at 1, the plain conditional model of a class-conditional one).</summary>
    private static SamplerOptions Options(string samplerName, int? steps, float scale, NoisyClassifierModel? noisy) => noisy is null
        ? new SamplerOptions { Sampler = GenerateCommand.ParseSampler(samplerName), Steps = steps, GuidanceScale = scale }
        : new SamplerOptions { Sampler = GenerateCommand.ParseSampler(samplerName), Steps = steps, Classifier = noisy, ClassifierScale = scale };

    private static void WriteFile(string path, string text)
    {
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir != null) Directory.CreateDirectory(dir);
        File.WriteAllText(path, text);
    }
}
