using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Training;
using Microsoft.ML.Transforms.Image;
using Spectre.Console;
using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>soak</c>: resident memory (VmRSS) of the 28x28 default configuration over a long run: N training steps (with
/// checkpoints), then M sampling steps (DDPM, T = 1000), read after a full GC at regular points; the growth is measured
/// from the end of a warm-up. Also the time from CancellationTokenSource.Cancel to the exception, in training and in sampling.
/// </summary>
public static class SoakCommand
{
    public static Command Create()
    {
        var trainSteps = new Option<int>("--train-steps") { Description = "Optimizer steps", DefaultValueFactory = _ => 300 }.AtLeast(1);
        var batch = new Option<int>("--batch-size") { Description = "Images per training step", DefaultValueFactory = _ => 16 }.AtLeast(1);
        var samplingSteps = new Option<int>("--sampling-steps") { Description = "Denoising steps in all (DDPM, 1000 per pass)", DefaultValueFactory = _ => 2000 }.AtLeast(1);
        var images = new Option<int>("--images") { Description = "Images denoised together", DefaultValueFactory = _ => 4 }.AtLeast(1);
        var json = new Option<string?>("--json") { Description = "Also write the figures to this JSON file" };
        var threads = new Option<int?>("--threads") { Description = "libtorch intra-op threads (default: libtorch's choice)" }.AtLeast(1);
        var command = new Command("soak", "Measure resident memory over long training and sampling runs of the 28x28 default model, and cancellation latency")
        {
            trainSteps, batch, samplingSteps, images, json, threads,
        };
        command.SetAction(parse => Run(parse.GetValue(threads), parse.GetValue(trainSteps), parse.GetValue(batch), parse.GetValue(samplingSteps), parse.GetValue(images), parse.GetValue(json)));
        return command;
    }

    private sealed record Reading(string Phase, long Step, double RssMiB);

    public static int Run(int? threads, int trainSteps, int batchSize, int samplingSteps, int images, string? jsonPath)
    {
        if (threads is int t) TorchSharp.torch.set_num_threads(t);
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(Blobs(256).ToList());
        string checkpointDir = Path.Combine(Path.GetTempPath(), "diffusion-soak-" + Guid.NewGuid().ToString("N"));
        var readings = new List<Reading>();
        double Rss() => ProcessMemory.ResidentBytesAfterGc() / (1024.0 * 1024.0);
        int every = Math.Max(1, trainSteps / 6);          // checkpoint interval
        int readEvery = Math.Max(1, trainSteps / 30);     // RSS readings
        var watch = Stopwatch.StartNew();
        DiffusionModel model;
        try
        {
            var options = Options(trainSteps, batchSize);
            options.CheckpointDirectory = checkpointDir;
            options.CheckpointInterval = every;
            options.Progress = new SyncProgress<TrainingProgress>(p =>
            {
                if (p.Step % readEvery == 0 || p.Step == 1) readings.Add(new Reading("train", p.Step, Rss()));
            });
            model = ml.Generative.Diffusion(options).Fit(data);
        }
        finally
        {
            if (Directory.Exists(checkpointDir)) Directory.Delete(checkpointDir, true);
        }
        double trainSeconds = watch.Elapsed.TotalSeconds;

        watch.Restart();
        int passes = Math.Max(1, samplingSteps / 1000);
        int sampleEvery = Math.Max(1, samplingSteps / 10);
        for (int pass = 0; pass < passes; pass++)
        {
            int done = pass * 1000;
            model.Generate(images, new SamplerOptions
            {
                Sampler = SamplerKind.Ddpm, Seed = (uint)pass, BatchSize = images,
                Progress = new SyncProgress<SamplingProgress>(p =>
                {
                    long step = done + p.Step;
                    if (step % sampleEvery == 0 || step == 1) readings.Add(new Reading("sample", step, Rss()));
                }),
            });
        }
        double sampleSeconds = watch.Elapsed.TotalSeconds;

        double trainCancel = CancelLatency(token =>
        {
            var o = Options(1_000_000, batchSize);
            o.CancellationToken = token;
            ml.Generative.Diffusion(o).Fit(data).Dispose();
        });
        double sampleCancel = CancelLatency(token =>
            model.Generate(images, new SamplerOptions { Sampler = SamplerKind.Ddpm, BatchSize = images, CancellationToken = token }));
        int after = model.Generate(1, new SamplerOptions { Steps = 10 }).Count;   // usable after the cancellation
        model.Dispose();

        var table = new Table().AddColumns("Phase", "Step", "RSS (MiB)", "vs warm-up");
        var summary = new Dictionary<string, object>();
        foreach (var phase in new[] { "train", "sample" })
        {
            var rows = readings.Where(r => r.Phase == phase).ToList();
            var warm = rows.FirstOrDefault(r => r.Step >= (phase == "train" ? trainSteps / 6 : samplingSteps / 10)) ?? rows[0];   // the end of the warm-up
            foreach (var r in rows)
                table.AddRow(r.Phase, r.Step.ToString(), r.RssMiB.ToString("F1"), r.Step < warm.Step ? "(warm-up)" : Percent(100 * (r.RssMiB / warm.RssMiB - 1)));
            double growth = 100 * (rows[^1].RssMiB / warm.RssMiB - 1);
            var afterWarmUp = rows.Where(r => r.Step >= warm.Step).ToList();
            summary[phase] = new { min_after_warm_up_mib = Math.Round(afterWarmUp.Min(r => r.RssMiB), 1), max_after_warm_up_mib = Math.Round(afterWarmUp.Max(r => r.RssMiB), 1), warm_up_step = warm.Step, warm_up_rss_mib = Math.Round(warm.RssMiB, 1), last_step = rows[^1].Step, last_rss_mib = Math.Round(rows[^1].RssMiB, 1), growth_percent = Math.Round(growth, 2), max_rss_mib = Math.Round(rows.Max(r => r.RssMiB), 1) };
        }
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine($"28x28 default U-Net ({model.ParameterCount:N0} parameters): {trainSteps} training steps of batch {batchSize} in {trainSeconds:F0} s, " +
                               $"{passes * 1000} DDPM steps of {images} images in {sampleSeconds:F0} s.");
        AnsiConsole.MarkupLine($"Cancellation: training stopped {trainCancel * 1000:F0} ms after Cancel(), sampling {sampleCancel * 1000:F0} ms after; generated {after} image afterwards.");
        if (jsonPath != null)
        {
            summary["threads"] = TorchSharp.torch.get_num_threads();
            summary["train_steps"] = trainSteps;
            summary["train_batch_size"] = batchSize;
            summary["sampling_steps"] = passes * 1000;
            summary["sampling_images"] = images;
            summary["train_seconds"] = Math.Round(trainSeconds, 1);
            summary["sampling_seconds"] = Math.Round(sampleSeconds, 1);
            summary["cancel_training_ms"] = Math.Round(trainCancel * 1000);
            summary["cancel_sampling_ms"] = Math.Round(sampleCancel * 1000);
            summary["readings"] = readings;
            File.WriteAllText(jsonPath, JsonSerializer.Serialize(summary, new JsonSerializerOptions { WriteIndented = true }));
        }
        return 0;
    }

    private static string Percent(double p) => (p >= 0 ? "+" : "") + p.ToString("F1") + "%";

    /// <summary>Starts <paramref name="work"/>, cancels it after a second of work and returns the seconds from Cancel() to its end.</summary>
    private static double CancelLatency(Action<CancellationToken> work)
    {
        using var cts = new CancellationTokenSource();
        var task = Task.Run(() => work(cts.Token));
        Thread.Sleep(3000);   // past the start-up: cancel in the middle of the work
        var w = Stopwatch.StartNew();
        cts.Cancel();
        try
        {
            task.Wait();
        }
        catch (AggregateException e) when (e.InnerException is OperationCanceledException)
        {
        }
        return w.Elapsed.TotalSeconds;
    }

    private static DiffusionTrainer.Options Options(long steps, int batchSize) => new()
    {
        ImageColumnName = "Image", ImageSize = 28, Channels = 1, Epochs = 1_000_000, BatchSize = batchSize, MaxSteps = steps, Seed = 1, LogInterval = 1_000_000,
    };

    /// <summary>Synthetic 28x28 images: a bright disc of random centre and radius on a dark background.</summary>
    private static IEnumerable<Image28> Blobs(int count)
    {
        var rng = new Random(0);
        for (int i = 0; i < count; i++)
        {
            int cx = rng.Next(6, 22), cy = rng.Next(6, 22), r = rng.Next(3, 7);
            var px = new byte[4 * 28 * 28];
            for (int y = 0; y < 28; y++)
                for (int x = 0; x < 28; x++)
                {
                    int k = 4 * (y * 28 + x);
                    px[k] = px[k + 1] = px[k + 2] = (byte)((x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r ? 220 : 15);
                    px[k + 3] = 255;
                }
            yield return new Image28 { Image = MLImage.CreateFromPixels(28, 28, MLPixelFormat.Bgra32, px) };
        }
    }

    private sealed class Image28
    {
        [ImageType(28, 28)]
        public MLImage Image { get; set; } = null!;
    }
}
