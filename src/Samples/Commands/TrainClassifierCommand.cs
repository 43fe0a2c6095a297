using System.CommandLine;
using System.Diagnostics;
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
/// <c>train-classifier</c>: trains the <see cref="FeatureClassifier"/> whose features the evaluate command compares,
/// with Adam on the Fashion-MNIST training split; prints the test accuracy and saves the weights.
/// </summary>
public static class TrainClassifierCommand
{
    public static Command Create()
    {
        var data = new Option<string>("--data") { Description = "Folder with the Fashion-MNIST IDX files", DefaultValueFactory = _ => FashionMnist.DefaultDirectory };
        var output = new Option<string>("--out") { Description = "Weights file to write", DefaultValueFactory = _ => EvaluateCommand.DefaultClassifierPath };
        var epochs = new Option<int>("--epochs") { Description = "Passes over the 60,000 training images", DefaultValueFactory = _ => 2 }.AtLeast(1);
        var batch = new Option<int>("--batch-size") { Description = "Images per step", DefaultValueFactory = _ => 128 }.AtLeast(1);
        var lr = new Option<double>("--lr") { Description = "Adam learning rate", DefaultValueFactory = _ => 1e-3 };
        var seed = new Option<int>("--seed") { Description = "Seed of the initialisation and shuffling", DefaultValueFactory = _ => 0 };
        var command = new Command("train-classifier", "Train the Fashion-MNIST feature classifier used by evaluate") { data, output, epochs, batch, lr, seed };
        command.SetAction(parse => Run(parse.GetValue(data)!, parse.GetValue(output)!, parse.GetValue(epochs), parse.GetValue(batch),
            parse.GetValue(lr), parse.GetValue(seed)));
        return command;
    }

    public static int Run(string dataDir, string outPath, int epochs, int batchSize, double lr, int seed)
    {
        InputFiles.RequireFashionMnist(dataDir, "train", "t10k");
        var (trainX, trainY) = FashionMnist.LoadTensors(dataDir, "train");
        var (testX, testY) = FashionMnist.LoadTensors(dataDir, "t10k");
        using var _1 = trainX; using var _2 = trainY; using var _3 = testX; using var _4 = testY;
        manual_seed(seed);
        using var net = new FeatureClassifier();
        using var optimizer = optim.Adam(net.parameters(), lr);
        long n = trainX.shape[0];
        int stepsPerEpoch = (int)((n + batchSize - 1) / batchSize);
        var watch = Stopwatch.StartNew();
        using var cts = ConsoleProgress.CancelOnCtrlC();
        try
        {
            ConsoleProgress.Run(ctx =>
            {
                var task = ctx.AddTask($"Training classifier ({epochs} epochs)", maxValue: epochs * stepsPerEpoch);
                net.train();
                for (int e = 0; e < epochs; e++)
                {
                    using var perm = randperm(n);
                    double lossSum = 0;
                    for (int s = 0; s < stepsPerEpoch; s++)
                    {
                        cts.Token.ThrowIfCancellationRequested();
                        using var scope = NewDisposeScope();
                        var idx = perm.narrow(0, (long)s * batchSize, Math.Min(batchSize, n - (long)s * batchSize));
                        var logits = net.forward(trainX.index_select(0, idx));
                        var loss = nn.functional.cross_entropy(logits, trainY.index_select(0, idx));
                        optimizer.zero_grad();
                        loss.backward();
                        optimizer.step();
                        lossSum += loss.item<float>();
                        task.Increment(1);
                        if (s % 50 == 49) task.Description = $"Epoch {e + 1}/{epochs}, loss {lossSum / (s + 1):F3}";
                    }
                }
                return 0;
            });
        }
        catch (OperationCanceledException)
        {
            AnsiConsole.MarkupLine("[yellow]Training cancelled.[/]");
            return 130;
        }
        double seconds = watch.Elapsed.TotalSeconds;
        double accuracy = Accuracy(net, testX, testY);
        string? dir = Path.GetDirectoryName(Path.GetFullPath(outPath));
        if (dir != null) Directory.CreateDirectory(dir);
        net.save(outPath);
        AnsiConsole.MarkupLine($"Trained in {seconds:F1} s ({torch.get_num_threads()} threads); test accuracy [bold]{accuracy:P2}[/]; " +
                               $"wrote [bold]{Markup.Escape(outPath)}[/] ({new FileInfo(outPath).Length / 1024.0:F0} KiB).");
        return 0;
    }

    /// <summary>Top-1 accuracy of <paramref name="net"/> on images [N, 1, 28, 28] in [-1, 1] with labels [N].</summary>
    public static double Accuracy(FeatureClassifier net, Tensor images, Tensor labels, int batchSize = 500)
    {
        net.eval();
        using var noGrad = no_grad();
        long correct = 0, n = images.shape[0];
        for (long i = 0; i < n; i += batchSize)
        {
            using var scope = NewDisposeScope();
            long len = Math.Min(batchSize, n - i);
            var pred = net.forward(images.narrow(0, i, len)).argmax(1);
            correct += pred.eq(labels.narrow(0, i, len)).sum().item<long>();
        }
        return (double)correct / n;
    }
}
