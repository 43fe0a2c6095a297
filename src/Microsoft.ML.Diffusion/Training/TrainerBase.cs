using System.Diagnostics;
using Microsoft.ML.Runtime;
using TorchSharp;
using Microsoft.ML.Diffusion.Columns;

namespace Microsoft.ML.Diffusion.Training;

/// <summary>
/// The training run every trainer shares, in the spirit of ML.NET's TorchSharpBaseTrainer: epochs over the rows streamed
/// through a shuffle buffer (<see cref="BatchStream"/>), batches, one optimizer step per batch (<see cref="TrainBatch"/>, the
/// trainer's), progress reports and log lines, cancellation between two steps, MaxSteps, atomic checkpoints and resuming from
/// them (<see cref="TrainingCheckpoint"/>, checked against the run's identity), the last good checkpoint named when a loss
/// diverges, and the end-of-epoch hook. A trainer builds its network and loop, validates its options, and subclasses this
/// with its step.
/// </summary>
/// <typeparam name="TLoop">The trainer's training loop.</typeparam>
internal abstract class TrainerBase<TLoop> where TLoop : TrainingLoop
{
    protected TrainerBase(TrainingRunSettings settings, TLoop loop, IChannel channel)
    {
        Settings = settings;
        Loop = loop;
        Channel = channel;
    }

    /// <summary>The run's settings.</summary>
    protected TrainingRunSettings Settings { get; }

    /// <summary>The loop that takes the optimizer steps.</summary>
    protected TLoop Loop { get; }

    /// <summary>The MLContext channel the run logs to.</summary>
    protected IChannel Channel { get; }

    /// <summary>The log line that opens the run (the network, the data, the device).</summary>
    protected abstract string Description { get; }

    /// <summary>One optimizer step on <paramref name="batch"/>; returns its loss.</summary>
    protected abstract float TrainBatch(TrainingBatch batch);

    /// <summary>The loss's name in log lines.</summary>
    protected virtual string LossName => "loss";

    /// <summary>What a log line adds in parentheses after the step's loss (default: the epoch's mean loss so far).</summary>
    protected virtual string StepDetails(double meanLoss) => $"mean {meanLoss:G5}";

    /// <summary>Checks a row as it joins a batch: its label and its index in the epoch's (shuffled) stream.</summary>
    protected virtual void CheckRow(long label, long index)
    {
    }

    /// <summary>Runs at the end of every epoch that completes (after its checkpoint is written), on the training thread.</summary>
    /// <param name="epoch">The epoch just completed (1-based).</param>
    /// <param name="meanLoss">The mean loss of the epoch's steps that this run took (NaN when none).</param>
    /// <param name="imagesPerSecond">Throughput of this run so far.</param>
    protected virtual void EpochCompleted(int epoch, float meanLoss, double imagesPerSecond)
    {
    }

    /// <summary>
    /// Trains: resumes from the checkpoint in <see cref="TrainingRunSettings.CheckpointDirectory"/> when there is one (refused
    /// when written with another <paramref name="identity"/>), then runs the epochs on the rows of <paramref name="imageCol"/>
    /// (and <paramref name="labelCol"/>, classes 0..<paramref name="numClasses"/> - 1) until they end, MaxSteps is reached or
    /// the token is cancelled (OperationCanceledException, after a checkpoint).
    /// </summary>
    /// <param name="input">The training data.</param>
    /// <param name="imageCol">The checked image column.</param>
    /// <param name="labelCol">The label column, or null.</param>
    /// <param name="numClasses">The class count (the index of a missing key).</param>
    /// <param name="pixelsPerRow">Floats per image (channels x side x side).</param>
    /// <param name="identity">The run's settings as a string; a checkpoint resumes only under the same identity.</param>
    /// <param name="seed">The run's seed: the data order of epoch e is drawn from seed + e (a resumed run keeps its own).</param>
    public void Train(IDataView input, TrainingImageInput imageCol, DataViewSchema.Column? labelCol, int numClasses, int pixelsPerRow,
        string identity, long seed)
    {
        var s = Settings;
        var loop = Loop;
        var ch = Channel;
        int startEpoch = 0;
        long skipBatches = 0;
        long dataSeed = seed;
        long? lastCheckpointStep = null;
        if (s.CheckpointDirectory is string dir && TrainingCheckpoint.Exists(dir))
        {
            (dataSeed, startEpoch, skipBatches) = TrainingCheckpoint.Load(dir, identity, loop);
            lastCheckpointStep = loop.Step;
            ch.Info($"Resuming from '{TrainingCheckpoint.PathIn(dir)}' at step {loop.Step} (epoch {startEpoch + 1}, batch {skipBatches}).");
        }
        long? rowCount = input.GetRowCount();
        s.RequireRows(rowCount);
        long? totalSteps = s.PlannedSteps(rowCount);
        ch.Info(Description);

        void WriteCheckpoint(string directory, int epoch, long batchInEpoch)
        {
            TrainingCheckpoint.Write(directory, identity, dataSeed, epoch, batchInEpoch, loop);
            lastCheckpointStep = loop.Step;
        }

        var watch = Stopwatch.StartNew();
        long imagesThisRun = 0;
        bool stopped = false;
        for (int epoch = startEpoch; epoch < s.Epochs && !stopped; epoch++)
        {
            double lossSum = 0;
            long lossCount = 0, batchInEpoch = 0, rowsInEpoch = 0;
            var rows = BatchStream.Rows(input, imageCol, labelCol, numClasses, pixelsPerRow, dataSeed + epoch, s.ShuffleBufferSize, s.CancellationToken);
            foreach (var batch in BatchStream.Batches(rows, s.BatchSize, pixelsPerRow, labelCol is not null, CheckRow))
            {
                rowsInEpoch += batch.Count;
                if (rowsInEpoch < s.BatchSize)
                    throw s.TooFewRows(rowsInEpoch);   // only the one, smaller batch of an epoch with too few rows
                RunBatch(batch);
                if (stopped) break;
            }
            if (rowsInEpoch == 0)
                throw s.TooFewRows(0);
            skipBatches = 0;
            if (!stopped)
            {
                ch.Info($"Epoch {epoch + 1}/{s.Epochs} done: mean {LossName} {(lossCount > 0 ? lossSum / lossCount : double.NaN):G5}, step {loop.Step}.");
                if (s.CheckpointDirectory is string d2)
                    WriteCheckpoint(d2, epoch + 1, 0);
                EpochCompleted(epoch + 1, lossCount > 0 ? (float)(lossSum / lossCount) : float.NaN,
                    imagesThisRun / Math.Max(1e-9, watch.Elapsed.TotalSeconds));
            }

            void RunBatch(TrainingBatch batch)
            {
                if (batchInEpoch < skipBatches)
                {
                    batchInEpoch++;
                    return; // consumed before the checkpoint we resumed from
                }
                if (s.MaxSteps is long done && loop.Step >= done)
                {
                    stopped = true; // resumed a run that had already reached MaxSteps
                    return;
                }
                if (s.CancellationToken.IsCancellationRequested)
                {
                    if (s.CheckpointDirectory is string cd)
                        WriteCheckpoint(cd, epoch, batchInEpoch);
                    s.CancellationToken.ThrowIfCancellationRequested();
                }
                float loss;
                int retriesBefore = loop.Retries;
                try
                {
                    loss = TrainBatch(batch);
                }
                catch (NonFiniteLossException e)
                {
                    // The failed step changed nothing and no checkpoint is written after it: the last one stays good.
                    if (s.CheckpointDirectory is string kept)
                        e = e.WithCheckpoint(TrainingCheckpoint.PathIn(kept), lastCheckpointStep);
                    ch.Error(e.Message);
                    throw e;
                }
                batchInEpoch++;
                imagesThisRun += batch.Count;
                lossSum += loss;
                lossCount++;
                double ips = imagesThisRun / Math.Max(1e-9, watch.Elapsed.TotalSeconds);
                if (loop.Retries > retriesBefore)
                    ch.Warning($"step {loop.Step} was recomputed ({loop.LastRetryReason ?? $"non-finite {LossName} or gradients"}); " +
                               $"{loop.Retries} recomputed step(s) in this run.");
                s.Progress?.Report(new TrainingProgress(epoch + 1, s.Epochs, loop.Step, totalSteps, loss, (float)(lossSum / lossCount), ips)
                {
                    LearningRate = loop.CurrentLearningRate,
                    Retries = loop.Retries,
                });
                if (loop.Step % s.LogInterval == 0)
                    ch.Info($"epoch {epoch + 1}/{s.Epochs} step {loop.Step}{(totalSteps is long t ? $"/{t}" : "")}: {LossName} {loss:G5} " +
                            $"({StepDetails(lossSum / lossCount)}), {ips:F1} img/s");
                if (s.CheckpointDirectory is string cd2 && loop.Step % s.CheckpointInterval == 0)
                    WriteCheckpoint(cd2, epoch, batchInEpoch);
                if (s.MaxSteps is long max && loop.Step >= max)
                {
                    stopped = true;
                    if (s.CheckpointDirectory is string cd3)
                        WriteCheckpoint(cd3, epoch, batchInEpoch);
                }
            }
        }
        ch.Info($"Trained {loop.Step} steps in {watch.Elapsed.TotalSeconds:F1} s.");
    }
}

/// <summary>The parts of a trainer's Fit around the run: seeded network construction, copies for snapshots, the identity.</summary>
internal static class TrainerBase
{
    /// <summary>Held while libtorch's global generator is seeded or its state saved and restored (weight initialisation draws
    /// from it, and so does dropout during training).</summary>
    public static readonly object TorchGlobalSeed = new();

    /// <summary>Builds network(s) with <paramref name="create"/> after seeding libtorch's global generator, which weight
    /// initialisation draws from, with <paramref name="seed"/>.</summary>
    public static T CreateSeeded<T>(long seed, Func<T> create)
    {
        lock (TorchGlobalSeed)
        {
            torch.manual_seed(seed);
            return create();
        }
    }

    /// <summary>
    /// An independent copy of <paramref name="network"/> (same architecture from <paramref name="create"/>, same weights and
    /// device, in eval mode). Building the copy's layers draws their initial weights from libtorch's global generator, which
    /// dropout also uses during training: its state is saved and restored around the construction, so taking a copy leaves
    /// training unchanged.
    /// </summary>
    public static T CopyOf<T>(T network, Func<T> create) where T : torch.nn.Module
    {
        T copy;
        lock (TorchGlobalSeed)
        {
            using var state = torch.random.get_rng_state();
            copy = create();
            torch.random.set_rng_state(state);
        }
        try
        {
            using (torch.no_grad())
            {
                var source = network.state_dict();
                foreach (var (name, target) in copy.state_dict())
                    target.copy_(source[name]);   // from the network's device to the CPU
            }
            copy.to(network.parameters().First().device);
            copy.eval();
            return copy;
        }
        catch
        {
            copy.Dispose();
            throw;
        }
    }
}
