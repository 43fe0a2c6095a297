using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Training;
using Spectre.Console;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>bench</c>: throughput of the 28x28 U-Net (the Core configuration) at batch 64: a training step
/// (forward, backward, AdamW, EMA) and one denoising step (forward + DDIM step), median of several runs.
/// </summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var batch = new Option<int>("--batch-size") { Description = "Images per step", DefaultValueFactory = _ => 64 };
        var iterations = new Option<int>("--iterations") { Description = "Timed steps per run", DefaultValueFactory = _ => 10 };
        var runs = new Option<int>("--runs") { Description = "Runs (the median is reported)", DefaultValueFactory = _ => 3 };
        var threads = new Option<int?>("--threads") { Description = "libtorch threads (default: libtorch's choice)" };
        var json = new Option<string?>("--json") { Description = "Also write the figures to this JSON file" };
        var command = new Command("bench", "Measure training and sampling throughput of the 28x28 U-Net") { batch, iterations, runs, threads, json };
        command.SetAction(parse => Run(parse.GetValue(batch), parse.GetValue(iterations), parse.GetValue(runs), parse.GetValue(threads), parse.GetValue(json)));
        return command;
    }

    public static int Run(int batchSize, int iterations, int runs, int? threads, string? jsonPath)
    {
        if (threads is int t) torch.set_num_threads(t);
        var config = new UNetConfig(); // 1x28x28, base 32, mults 1,2,2, attention at 7
        manual_seed(1);
        using var model = new UNet(config);
        using var ema = new UNet(config);
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        using var loop = new DiffusionTrainingLoop(model, ema, schedule, new TrainingSettings { Seed = 1 }, CPU);
        using var x0 = rand(batchSize, 1, 28, 28) * 2 - 1;
        AnsiConsole.MarkupLine($"U-Net: {model.ParameterCount:N0} parameters, {model.ForwardFlopsPerImage() / 1e9:F3} GFLOP/image forward; " +
                               $"batch {batchSize}, {torch.get_num_threads()} threads.");

        double Measure(Action step)
        {
            for (int i = 0; i < 2; i++) step(); // warm-up (oneDNN primitive creation)
            var rates = new List<double>();
            for (int r = 0; r < runs; r++)
            {
                var w = Stopwatch.StartNew();
                for (int i = 0; i < iterations; i++) step();
                rates.Add(batchSize * iterations / w.Elapsed.TotalSeconds);
            }
            rates.Sort();
            return rates[rates.Count / 2];
        }

        double train = Measure(() => loop.TrainStep(x0));
        var scheduler = new DdimScheduler(schedule);
        scheduler.SetTimesteps(50);
        ema.eval();
        double step = Measure(() =>
        {
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            var tt = full(new long[] { batchSize }, 500L, dtype: int64);
            var eps = ema.forward(x0, tt);
            scheduler.Step(eps, scheduler.Timesteps[25], x0);
        });
        double gflop = model.ForwardFlopsPerImage() / 1e9;
        AnsiConsole.MarkupLine($"train step:     [bold]{train:F1}[/] img/s");
        AnsiConsole.MarkupLine($"sampling step:  [bold]{step:F1}[/] img/s ({step * gflop:F1} GFLOP/s in the U-Net forward)");
        if (jsonPath != null)
        {
            var doc = new JsonObject
            {
                ["batch_size"] = batchSize,
                ["threads"] = torch.get_num_threads(),
                ["train_img_per_s"] = new JsonObject { ["torchsharp"] = Math.Round(train, 2) },
                ["step_img_per_s"] = new JsonObject { ["torchsharp"] = Math.Round(step, 2) },
                ["unet_gflop_per_img"] = Math.Round(gflop, 4),
                ["unet_gflops_per_s"] = Math.Round(step * gflop, 2),
            };
            File.WriteAllText(jsonPath, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            AnsiConsole.MarkupLine($"wrote {Markup.Escape(jsonPath)}");
        }
        return 0;
    }
}
