using System.Diagnostics;
using Microsoft.ML.Diffusion.Evaluation;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Samples.Cli;
using Microsoft.ML.Diffusion.Samples.Data;
using Microsoft.ML.Diffusion.Samples.Metrics;
using Spectre.Console;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Samples.Commands;

/// <summary>
/// <c>train --eval-every N</c>: at every Nth epoch's end, samples a fixed-seed set from the run's EMA weights
/// (<see cref="TrainingSnapshot.CreateModel"/>) and measures it exactly as <c>evaluate</c> does (seeds 0..n-1, batches of 64,
/// the first n test images, <see cref="SampleScores"/>); for a class-conditional model also the classifier's accuracy at
/// guidance 1 and 3 as <c>evaluate-guidance</c> measures it. Writes a sample grid per evaluation.
/// </summary>
public sealed class TrainEvaluation : IDisposable
{
    /// <summary>What to measure.</summary>
    /// <param name="Every">Evaluate at the end of epochs Every, 2 Every, ...</param>
    /// <param name="Samples">Images generated for the Frechet distance (and test images compared with them).</param>
    /// <param name="SamplerName">The sampler's command-line name.</param>
    /// <param name="Steps">Sampler steps (null: the sampler's default, 50 for DDIM).</param>
    /// <param name="PerClass">Images per class for the accuracy of a class-conditional model (0: not measured).</param>
    public sealed record Settings(int Every, int Samples, string SamplerName, int? Steps, int PerClass);

    /// <summary>The guidance scales w of the accuracy figures.</summary>
    public static readonly float[] GuidanceScales = { 1f, 3f };

    private const int BatchSize = 64;   // evaluate's default --batch-size
    private readonly Settings _settings;
    private readonly FeatureClassifier _net;
    private readonly SampleScores _scores;
    private ProgressTask? _task;

    private TrainEvaluation(Settings settings, FeatureClassifier net, SampleScores scores)
    {
        _settings = settings;
        _net = net;
        _scores = scores;
    }

    /// <summary>Loads the classifier and the test split before training starts, so that a bad file fails at once.</summary>
    public static TrainEvaluation Create(Settings settings, string classifierPath, string dataDirectory)
    {
        GenerateCommand.ParseSampler(settings.SamplerName);
        var net = EvaluateCommand.LoadClassifier(classifierPath);
        try
        {
            InputFiles.RequireFashionMnist(dataDirectory, "t10k");
            var (testX, testY) = FashionMnist.LoadTensors(dataDirectory, "t10k");
            using var _1 = testX;
            using var _2 = testY;
            if (settings.Samples > testX.shape[0])
                throw new CliException($"--eval-samples {settings.Samples} exceeds the {testX.shape[0]} test images in --data '{dataDirectory}'.");
            return new TrainEvaluation(settings, net, new SampleScores(net, testX, settings.Samples));
        }
        catch
        {
            net.Dispose();
            throw;
        }
    }

    /// <summary>Whether <paramref name="epoch"/> (1-based) ends with an evaluation.</summary>
    public bool IsDue(int epoch) => epoch % _settings.Every == 0;

    /// <summary>Measures the snapshot, writes its grid to <paramref name="gridPath"/>, and returns the metrics row.</summary>
    /// <param name="snapshot">The epoch's end.</param>
    /// <param name="gridPath">The grid PNG.</param>
    /// <param name="progress">Where the training's progress bars are drawn (one more bar shows the sampling).</param>
    public MetricsRow Run(TrainingSnapshot snapshot, string gridPath, ProgressContext? progress)
    {
        var watch = Stopwatch.StartNew();
        using var model = snapshot.CreateModel();
        var options = Options(snapshot, guidance: 1f);
        int steps = options.ResolveSteps(model.Timesteps);
        int perClass = model.NumClasses == FeatureClassifier.ClassCount ? _settings.PerClass : 0;
        int images = _settings.Samples + perClass * model.NumClasses * GuidanceScales.Length;
        if (progress is not null)
        {
            _task ??= progress.AddTask("Evaluating");
            _task.MaxValue = images;
            _task.Value = 0;
            _task.Description = $"Evaluating epoch {snapshot.Epoch}";
        }
        double done = 0;
        Tensor Sample(SamplerOptions o, Func<SamplerOptions, Tensor> generate, int count)
        {
            o.Progress = new SyncProgress<SamplingProgress>(p =>
            {
                if (_task is not null) _task.Value = done + Math.Min(count, p.BatchIndex * (double)o.BatchSize + o.BatchSize * p.Step / (double)p.TotalSteps);
            });
            var result = generate(o);
            done += count;
            return result;
        }

        // The Frechet distance and KID, as evaluate --count Samples --sampler ... --steps ... --seed 0.
        var seeds = SampleScores.Seeds(0, _settings.Samples);
        using var generated = Sample(options, o => model.GenerateTensor(seeds, o), seeds.Length);
        var (fd, kid) = _scores.Distances(generated);

        // The accuracy per class, as evaluate-guidance --per-class PerClass --guidance 1,3 (seeds 0..PerClass-1 for every class).
        var accuracy = new double?[GuidanceScales.Length];
        Tensor? classGrid = null;
        try
        {
            if (perClass > 0)
            {
                var (classSeeds, labels) = SampleScores.PerClassRequests(model.NumClasses, perClass, 0);
                for (int g = 0; g < GuidanceScales.Length; g++)
                {
                    using var byClass = Sample(Options(snapshot, GuidanceScales[g]), o => model.GenerateTensor(classSeeds, labels, o), classSeeds.Length);
                    accuracy[g] = SampleScores.PerClassAccuracy(_net, byClass, model.NumClasses, perClass).Average();
                    if (g == GuidanceScales.Length - 1)
                    {
                        // One row per class: its first (up to) 8 images at the strongest guidance.
                        int columns = Math.Min(8, perClass);
                        using var index = tensor(Enumerable.Range(0, model.NumClasses * columns)
                            .Select(i => (long)(i / columns * perClass + i % columns)).ToArray());
                        classGrid = byClass.index_select(0, index);
                    }
                }
            }
            if (classGrid is not null)
                WriteGrid(classGrid, gridPath, columns: Math.Min(8, perClass));
            else
                using (var first = generated.narrow(0, 0, Math.Min(64, _settings.Samples)))
                    WriteGrid(first, gridPath, columns: 8);
        }
        finally
        {
            classGrid?.Dispose();
        }

        var row = new MetricsRow
        {
            Kind = MetricsRow.EvalKind, Step = snapshot.Step, Epoch = snapshot.Epoch, Loss = snapshot.MeanLoss,
            FrechetDistance = fd, Kid = kid, EvalSamples = _settings.Samples, EvalSampler = _settings.SamplerName, EvalSteps = steps,
            AccuracyGuidance1 = accuracy[0], AccuracyGuidance3 = accuracy[1], EvalSeconds = watch.Elapsed.TotalSeconds,
        };
        if (_task is not null)
            _task.Description = $"Epoch {snapshot.Epoch}: Frechet distance {fd:F2}" +
                (accuracy[0] is double a1 ? $", accuracy {a1:P0} (w=1) {accuracy[1]:P0} (w=3)" : "");
        return row;
    }

    private SamplerOptions Options(TrainingSnapshot snapshot, float guidance) => new()
    {
        Sampler = GenerateCommand.ParseSampler(_settings.SamplerName), Steps = _settings.Steps, Seed = 0, BatchSize = BatchSize,
        GuidanceScale = guidance, CancellationToken = snapshot.CancellationToken,
    };

    private static void WriteGrid(Tensor images, string path, int columns)
    {
        var tiles = ImageTensorConverter.ToImages(images);
        try
        {
            using var grid = ImageGrid.Create(tiles, columns: columns);
            GenerateCommand.SavePng(grid, path);
        }
        finally
        {
            foreach (var t in tiles) t.Dispose();
        }
    }

    /// <summary>Frees the classifier and the test features.</summary>
    public void Dispose()
    {
        _scores.Dispose();
        _net.Dispose();
    }
}
