using System.CommandLine;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Training;
using Microsoft.ML.Transforms.Image;
using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>train-synthetic</c> (hidden): trains the tests' tiny 8x8 model on synthetic squares, for the fault-injection and
/// determinism tests that need training in another process (the test process kills it and resumes its checkpoints).
/// Prints "step N" after every optimizer step. The model and the data must stay identical to the tests'
/// <c>TestData.TinyOptions</c> and <c>TestData.Squares</c>.
/// </summary>
public static class SyntheticTrainCommand
{
    public static Command Create()
    {
        var count = new Option<int>("--count") { Description = "Synthetic images", DefaultValueFactory = _ => 24 }.AtLeast(1);
        var steps = new Option<long>("--max-steps") { Description = "Optimizer steps in all", DefaultValueFactory = _ => 4 }.AtLeast(1L);
        var checkpoints = new Option<string?>("--checkpoint-dir") { Description = "Write checkpoints here and resume from them" };
        var interval = new Option<int>("--checkpoint-interval") { Description = "Steps between checkpoints", DefaultValueFactory = _ => 1 }.AtLeast(1);
        var output = new Option<string?>("--out") { Description = "Model zip to write at the end" };
        var threads = new Option<int?>("--threads") { Description = "libtorch intra-op threads (default: libtorch's choice)" }.AtLeast(1);
        var command = new Command("train-synthetic", "Train the tests' tiny model on synthetic images (used by the fault tests)")
        {
            count, steps, checkpoints, interval, output, threads,
        };
        command.Hidden = true;
        command.SetAction(parse =>
        {
            if (parse.GetValue(threads) is int t) TorchSharp.torch.set_num_threads(t);
            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(Squares(parse.GetValue(count)).ToList());
            var options = TinyOptions(parse.GetValue(steps));
            options.CheckpointDirectory = parse.GetValue(checkpoints);
            options.CheckpointInterval = parse.GetValue(interval);
            options.Progress = new SyncProgress<TrainingProgress>(p => Console.WriteLine($"step {p.Step}"));
            using var model = ml.Generative.Diffusion(options).Fit(data);
            if (parse.GetValue(output) is string path) ml.Model.Save(model, data.Schema, path);
            Console.WriteLine($"done {model.Config.TrainedSteps}");
            return 0;
        });
        return command;
    }

    /// <summary>As the tests' TestData.TinyOptions.</summary>
    private static DiffusionTrainer.Options TinyOptions(long steps) => new()
    {
        ImageColumnName = "Image", OutputColumnName = "GeneratedImage", ImageSize = 8, Channels = 1,
        BaseChannels = 8, ChannelMultipliers = new[] { 1, 2 }, AttentionResolutions = new[] { 4 }, NumResBlocks = 1,
        GroupNormGroups = 4, Timesteps = 50, Epochs = 100, BatchSize = 8, MaxSteps = steps, LearningRate = 1e-3f,
        Seed = 3, Sampler = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 5, BatchSize = 16 },
    };

    /// <summary>As the tests' TestData.Squares: bright 3x3 squares at random positions on a dark 8x8 background.</summary>
    private static IEnumerable<Image8> Squares(int count, int seed = 0)
    {
        var rng = new Random(seed);
        for (int i = 0; i < count; i++)
        {
            int ox = rng.Next(0, 5), oy = rng.Next(0, 5);
            var px = new byte[4 * 64];
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++)
                {
                    int k = 4 * (y * 8 + x);
                    px[k] = px[k + 1] = px[k + 2] = (byte)(x >= ox && x < ox + 3 && y >= oy && y < oy + 3 ? 230 : 20);
                    px[k + 3] = 255;
                }
            yield return new Image8 { Image = MLImage.CreateFromPixels(8, 8, MLPixelFormat.Bgra32, px), Label = (uint)(ox + 5 * oy) };
        }
    }

    private sealed class Image8
    {
        [ImageType(8, 8)]
        public MLImage Image { get; set; } = null!;

        public uint Label { get; set; }
    }
}
