using System.CommandLine;
using System.Diagnostics;
using Microsoft.ML.Diffusion.Samples.Data;
using Microsoft.ML.Diffusion.Samples.Metrics;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Training;
using Spectre.Console;
using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary><c>train</c>: trains a DDPM on Fashion-MNIST and saves it with mlContext.Model.Save.</summary>
public static class TrainCommand
{
    public static Command Create()
    {
        var data = new Option<string>("--data") { Description = "Folder with the Fashion-MNIST IDX files", DefaultValueFactory = _ => FashionMnist.DefaultDirectory };
        var limit = new Option<int?>("--limit") { Description = "Train on the first N images only" }.AtLeast(1);
        var epochs = new Option<int>("--epochs") { Description = "Passes over the data", DefaultValueFactory = _ => 1 }.AtLeast(1);
        var output = new Option<string>("--out") { Description = "Model zip to write", DefaultValueFactory = _ => "model.zip" };
        var batch = new Option<int>("--batch-size") { Description = "Images per optimizer step", DefaultValueFactory = _ => 64 }.AtLeast(1);
        var baseChannels = new Option<int>("--base-channels") { Description = "U-Net width", DefaultValueFactory = _ => 32 }.AtLeast(1);
        var timesteps = new Option<int>("--timesteps") { Description = "Diffusion timesteps T", DefaultValueFactory = _ => 1000 }.AtLeast(1);
        var schedule = new Option<NoiseSchedule>("--schedule") { Description = "Beta schedule", DefaultValueFactory = _ => NoiseSchedule.Linear };
        var lr = new Option<float>("--lr") { Description = "AdamW learning rate", DefaultValueFactory = _ => 2e-4f };
        var warmup = new Option<int>("--lr-warmup") { Description = "Optimizer steps of linear learning-rate warm-up", DefaultValueFactory = _ => 0 }.AtLeast(0);
        var lrSchedule = new Option<LearningRateSchedule>("--lr-schedule") { Description = "Learning rate after the warm-up: Constant or Cosine (decays to zero at the last step)", DefaultValueFactory = _ => LearningRateSchedule.Constant };
        var lrDecay = new Option<int>("--lr-decay-steps")
        {
            Description = "With --lr-schedule Constant: cool the learning rate down linearly to zero over the run's last N optimizer steps (a run resumed from a checkpoint before the cool-down continues exactly)",
            DefaultValueFactory = _ => 0,
        }.AtLeast(0);
        var threads = new Option<int?>("--threads") { Description = "CPU threads for libtorch (default: all cores)" }.AtLeast(1);
        var ema = new Option<float>("--ema") { Description = "EMA decay", DefaultValueFactory = _ => 0.995f };
        var seed = new Option<int>("--seed") { Description = "Seed of weights, noise and data order", DefaultValueFactory = _ => 1 };
        var maxSteps = new Option<long?>("--max-steps") { Description = "Stop after this many optimizer steps" }.AtLeast(1L);
        var checkpoints = new Option<string?>("--checkpoint-dir") { Description = "Write checkpoints here and resume from them" };
        var prediction = new Option<PredictionType>("--prediction") { Description = "What the network predicts: Epsilon, Sample or VPrediction", DefaultValueFactory = _ => PredictionType.Epsilon };
        var objective = new Option<string>("--objective") { Description = "Training objective: ddpm (denoising diffusion) or flow-matching (rectified flow, Lipman et al. 2023; samples with flow-euler or flow-heun)", DefaultValueFactory = _ => "ddpm" };
        objective.OneOf(ObjectiveNames);
        var zeroSnr = new Option<bool>("--rescale-betas-zero-snr") { Description = "Rescale the betas to zero terminal SNR (Lin et al. 2024; needs --prediction VPrediction; sample with --spacing Trailing)" };
        var offsetNoise = new Option<float>("--offset-noise") { Description = "Offset noise (Guttenberg 2023): training noise randn + this * a per-channel constant (0: off; typical 0.05-0.1)", DefaultValueFactory = _ => 0f };
        offsetNoise.Validators.Add(r =>
        {
            float v = r.GetValueOrDefault<float>();
            if (!(v >= 0 && float.IsFinite(v))) r.AddError($"--offset-noise is {v}; expected a finite number >= 0.");
        });
        var selfConditioning = new Option<bool>("--self-conditioning") { Description = "Self-conditioning (Chen et al. 2022, Analog Bits): feed the network its previous x_0 estimate" };
        var precision = new Option<Precision>("--precision") { Description = "Fp32 or Bf16Mixed (bfloat16 forward/backward, float32 master weights; needs the full instruction set, the default)", DefaultValueFactory = _ => Precision.Fp32 };
        var weighting = new Option<LossWeighting>("--loss-weighting") { Description = "None or MinSnr (gamma 5)", DefaultValueFactory = _ => LossWeighting.None };
        var conditional = new Option<bool>("--conditional") { Description = "Class-conditional model on the Fashion-MNIST labels (classifier-free guidance, Ho & Salimans 2022)" };
        var conditionDrop = new Option<float>("--condition-drop") { Description = "With --conditional: probability of training on the null label", DefaultValueFactory = _ => DiffusionDefaults.ConditionDropProbability };
        var superResolution = new Option<int?>("--super-resolution") { Description = "Train an SR3-style super-resolution model for this factor (2 or 4)" };
        superResolution.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<int?>() is int f && f != 2 && f != 4) r.AddError($"--super-resolution is {f}; expected one of 2, 4.");
        });

        var metrics = new Option<string?>("--metrics") { Description = "Append one CSV row per step and per evaluation here (default with --checkpoint-dir: <checkpoint-dir>/metrics.csv); see plot" };
        var evalEvery = new Option<int?>("--eval-every") { Description = "Every N epochs: the evaluate Frechet distance of a fixed-seed sample set, and a sample grid, next to the metrics file" }.AtLeast(1);
        var evalSamples = new Option<int>("--eval-samples") { Description = "Images generated per evaluation (and test images compared with them)", DefaultValueFactory = _ => 500 }.AtLeast(2);
        var evalSampler = new Option<string>("--eval-sampler") { Description = "Sampler of the evaluations: " + string.Join(", ", GenerateCommand.SamplerNames), DefaultValueFactory = _ => "ddim" };
        evalSampler.OneOf(GenerateCommand.SamplerNames);
        var evalSteps = new Option<int?>("--eval-steps") { Description = "Sampler steps of the evaluations (default: the sampler's; DDIM 50)" }.AtLeast(1);
        var evalPerClass = new Option<int>("--eval-per-class") { Description = "With --conditional: images per class for the classifier's accuracy at guidance 1 and 3 (0: skip)", DefaultValueFactory = _ => 50 }.AtLeast(0);
        var classifier = new Option<string>("--classifier") { Description = "Feature classifier of the evaluations (train-classifier)", DefaultValueFactory = _ => EvaluateCommand.DefaultClassifierPath };
        var saveMilestones = new Option<bool>("--save-milestones")
        {
            Description = "With --eval-every: also save the model of each evaluated epoch (model-epoch-NNN.zip next to its grid), to ship the best rather than the last",
        };

        var command = new Command("train", "Train a diffusion model on Fashion-MNIST")
        {
            data, limit, epochs, output, batch, baseChannels, timesteps, schedule, lr, ema, seed, maxSteps, checkpoints, warmup, lrSchedule, lrDecay, threads, prediction, weighting, selfConditioning,
            objective, zeroSnr, offsetNoise, conditional, conditionDrop, superResolution, precision, metrics, evalEvery, evalSamples, evalSampler, evalSteps, evalPerClass, classifier,
            saveMilestones,
        };
        command.SetAction(parse =>
        {
            // The metrics file (checked, not yet changed), then the data and the evaluation's classifier and test split: bad input fails before training.
            string? checkpointDir = parse.GetValue(checkpoints);
            string? metricsPath = parse.GetValue(metrics) ?? (checkpointDir is null ? null : Path.Combine(checkpointDir, "metrics.csv"));
            string metricsOption = parse.GetValue(metrics) is null ? "--checkpoint-dir" : "--metrics";
            var trainingObjective = ParseObjective(parse.GetValue(objective)!);
            bool flow = trainingObjective == DiffusionObjective.FlowMatching;
            // The evaluations sample with a sampler of the objective: flow-euler by default for a flow model.
            string evalSamplerName = flow && parse.GetResult(evalSampler) is null or { Implicit: true } ? "flow-euler" : parse.GetValue(evalSampler)!;
            if (SamplerRegistry.FindByCliName(evalSamplerName) is { } evalRow && evalRow.Objective != trainingObjective)
                throw new CliException($"--eval-sampler {evalSamplerName} samples {evalRow.Objective} models, but --objective is {parse.GetValue(objective)}; use one of: " +
                    string.Join(", ", SamplerRegistry.All.Where(r => r.Objective == trainingObjective).Select(r => r.CliName)) + ".");
            int? every = parse.GetValue(evalEvery);
            if (every is not null && metricsPath is null)
                throw new CliException("--eval-every needs --metrics FILE.csv or --checkpoint-dir (the figures and grids go next to the metrics file).");
            bool milestones = parse.GetValue(saveMilestones);
            if (milestones && every is null)
                throw new CliException("--save-milestones saves the model of each evaluated epoch; it needs --eval-every N.");
            if (parse.GetValue(lrDecay) is > 0 and int decaySteps && parse.GetValue(lrSchedule) != LearningRateSchedule.Constant)
                throw new CliException($"--lr-decay-steps is {decaySteps}, but --lr-schedule is {parse.GetValue(lrSchedule)}, which already decays to zero; " +
                    "a cool-down goes with --lr-schedule Constant.");
            using var metricsLog = metricsPath is null ? null : MetricsLog.Open(metricsPath, metricsOption);
            string dir = parse.GetValue(data)!;
            using var evaluation = every is int k
                ? TrainEvaluation.Create(new TrainEvaluation.Settings(k, parse.GetValue(evalSamples), evalSamplerName, parse.GetValue(evalSteps),
                    parse.GetValue(evalPerClass)), parse.GetValue(classifier)!, dir)
                : null;
            InputFiles.RequireFashionMnist(dir, "train");
            string outputFolder = metricsPath is null ? "." : Path.GetDirectoryName(Path.GetFullPath(metricsPath))!;

            string imagesPath = FashionMnist.ImagesPath(dir, "train");
            int? n = parse.GetValue(limit);
            int total = n ?? IdxReader.ReadImageHeader(imagesPath).Count;
            int e = parse.GetValue(epochs), b = parse.GetValue(batch);

            if (parse.GetValue(threads) is int t) TorchSharp.torch.set_num_threads(t);
            var ml = new MLContext(seed: parse.GetValue(seed));
            var images = FashionMnist.Load(ml, dir, "train", n);
            using var cts = ConsoleProgress.CancelOnCtrlC();
            var options = new DiffusionTrainer.Options
            {
                ImageColumnName = "Image", OutputColumnName = "GeneratedImage", ImageSize = 28, Channels = 1,
                BaseChannels = parse.GetValue(baseChannels), Timesteps = parse.GetValue(timesteps), Schedule = parse.GetValue(schedule),
                Epochs = e, BatchSize = b, LearningRate = parse.GetValue(lr), EmaDecay = parse.GetValue(ema),
                LearningRateWarmupSteps = parse.GetValue(warmup), LearningRateSchedule = parse.GetValue(lrSchedule),
                LearningRateDecaySteps = parse.GetValue(lrDecay),
                Seed = parse.GetValue(seed), MaxSteps = parse.GetValue(maxSteps), CheckpointDirectory = checkpointDir,
                Prediction = parse.GetValue(prediction), LossWeighting = parse.GetValue(weighting),
                SelfConditioning = parse.GetValue(selfConditioning), Precision = parse.GetValue(precision),
                RescaleBetasZeroSnr = parse.GetValue(zeroSnr), OffsetNoise = parse.GetValue(offsetNoise), Objective = trainingObjective,
                // A flow model's saved default sampler is flow matching's Euler (the DDPM default, DDIM, does not apply to it).
                Sampler = flow ? new SamplerOptions { Sampler = SamplerKind.FlowMatchEuler } : new SamplerOptions(),
                // The IDX label file gives a UInt32 column of classes 0..9.
                LabelColumnName = parse.GetValue(conditional) ? "Label" : null,
                NumClasses = parse.GetValue(conditional) ? FashionMnist.ClassNames.Length : null,
                ConditionDropProbability = parse.GetValue(conditionDrop),
                Conditioning = parse.GetValue(superResolution) is int factor ? Conditioning.LowResolution(factor) : null,
                CancellationToken = cts.Token,
            };
            long steps = (long)Math.Ceiling(total / (double)b) * e;
            if (options.MaxSteps is long m) steps = Math.Min(steps, m);
            // The images are streamed from the IDX file, so the data view does not know its row count; a curve that ends at the
            // run's last step (cosine, cool-down) gets it from here. MaxSteps is not part of the checkpoint identity.
            if (options.LearningRateSchedule == LearningRateSchedule.Cosine || options.LearningRateDecaySteps > 0) options.MaxSteps = steps;
            AnsiConsole.MarkupLine($"Training on [bold]{total:N0}[/] images from {Markup.Escape(dir)}: {e} epoch(s), batch {b}, {steps:N0} steps.");

            var watch = Stopwatch.StartNew();
            var evaluations = new List<MetricsRow>();
            int retries = 0;
            DiffusionModel model;
            try
            {
                model = ConsoleProgress.Run(ctx =>
                {
                    var task = ctx.AddTask("Training", maxValue: steps);
                    options.Progress = new SyncProgress<TrainingProgress>(p =>
                    {
                        retries = p.Retries;
                        task.Value = p.Step;
                        task.Description = $"Training: epoch {p.Epoch}/{p.Epochs}, loss {p.AverageLoss:F4}, {p.ImagesPerSecond:F0} img/s" +
                                           (p.Retries > 0 ? $", {p.Retries} step(s) recomputed" : "");
                        metricsLog?.Append(new MetricsRow
                        {
                            Kind = MetricsRow.StepKind, Step = p.Step, Epoch = p.Epoch, Loss = p.Loss, LearningRate = p.LearningRate,
                            ImagesPerSecond = p.ImagesPerSecond,
                        });
                    });
                    if (evaluation is not null)
                    {
                        options.EpochCompleted = snapshot =>
                        {
                            if (!evaluation.IsDue(snapshot.Epoch)) return;
                            var row = evaluation.Run(snapshot, Path.Combine(outputFolder, $"grid-epoch-{snapshot.Epoch:D3}.png"), ctx);
                            metricsLog!.Append(row);
                            evaluations.Add(row);
                            if (milestones)
                            {
                                using var milestone = snapshot.CreateModel();
                                SaveAtomically(ml, milestone, images.Schema, Path.Combine(outputFolder, $"model-epoch-{snapshot.Epoch:D3}.zip"));
                            }
                            // The curve so far, redrawn after each evaluation.
                            PlotCommand.Save(MetricsRow.ReadAll(metricsLog.Path), metricsLog.Path, Path.Combine(outputFolder, "learning-curve.png"),
                                new LearningCurvePlot.Settings(Title: "Learning curve"));
                        };
                    }
                    return ml.Generative.Diffusion(options).Fit(images);
                });
            }
            catch (OperationCanceledException)
            {
                AnsiConsole.MarkupLine("[yellow]Training cancelled.[/]" + (options.CheckpointDirectory is null ? "" : " Run the same command to resume."));
                return 130;
            }
            foreach (var row in evaluations)
                AnsiConsole.MarkupLine($"Epoch {row.Epoch} (step {row.Step:N0}): Frechet distance {row.FrechetDistance:F3}, KID {row.Kid:F4}" +
                    (row.AccuracyGuidance1 is double a1 ? $", classifier accuracy {a1:P1} at w = 1, {row.AccuracyGuidance3:P1} at w = 3" : "") +
                    $" ({row.EvalSamples} images, {row.EvalSampler} {row.EvalSteps} steps, {row.EvalSeconds:F0} s).");
            if (metricsLog is not null) AnsiConsole.MarkupLine($"Metrics: [bold]{Markup.Escape(metricsLog.Path)}[/] (draw them with: plot --metrics {Markup.Escape(metricsLog.Path)}).");
            string outPath = parse.GetValue(output)!;
            SaveAtomically(ml, model, images.Schema, outPath);
            AnsiConsole.MarkupLine($"Trained {model.Config.TrainedSteps:N0} steps in {watch.Elapsed.TotalMinutes:F1} min " +
                                   $"({total * (double)e / watch.Elapsed.TotalSeconds:F1} img/s); wrote [bold]{Markup.Escape(outPath)}[/].");
            if (retries > 0)
                AnsiConsole.MarkupLine($"[yellow]{retries} step(s) were recomputed after a transient fault (non-finite loss or a libtorch error).[/]");
            return 0;
        });
        return command;
    }

    /// <summary>Saves <paramref name="model"/> to <paramref name="path"/> through a temporary file, so an interrupted save leaves the
    /// previous file (or none) rather than a partial zip.</summary>
    private static void SaveAtomically(MLContext ml, DiffusionModel model, DataViewSchema schema, string path) =>
        Microsoft.ML.Diffusion.Common.AtomicFile.Write(path, stream => ml.Model.Save(model, schema, stream));

    /// <summary>The names <c>--objective</c> accepts.</summary>
    public static readonly string[] ObjectiveNames = { "ddpm", "flow-matching" };

    /// <summary>The objective named on the command line.</summary>
    public static DiffusionObjective ParseObjective(string name) => name switch
    {
        "ddpm" => DiffusionObjective.Ddpm,
        "flow-matching" => DiffusionObjective.FlowMatching,
        _ => throw new CliException($"--objective '{name}' is not recognised; expected one of {string.Join(", ", ObjectiveNames)}."),
    };
}
