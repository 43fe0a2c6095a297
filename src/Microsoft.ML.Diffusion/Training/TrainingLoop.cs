using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Training;

/// <summary>
/// What the training loops of every network share: the seeded CPU generator that draws a step's noise, the optimizer over
/// the network's parameters, the learning-rate curve, the step counter, the optimizer step with its retry of non-finite
/// losses (<see cref="OptimizerStep"/>), and the loop state a checkpoint holds (<see cref="SaveState"/>). A subclass draws its
/// batch's randomness from <see cref="Generator"/>, defines the loss, and adds what else its checkpoint holds (an EMA).
/// Knows TorchSharp only.
/// </summary>
internal abstract class TrainingLoop : IDisposable
{
    /// <summary>Tries of one step before a non-finite loss or gradient stops training.</summary>
    public const int MaxAttempts = 3;

    private readonly nn.Module _network;
    private readonly Parameter[] _parameters;
    private readonly LearningRatePlan _learningRate;
    private readonly double _gradientClipNorm;

    /// <summary>Creates the generator (seeded with <paramref name="seed"/>) and the optimizer over <paramref name="network"/>'s
    /// parameters; the network must already be on <paramref name="device"/>.</summary>
    /// <param name="network">The network being trained.</param>
    /// <param name="seed">Seed of the generator that draws each step's timesteps and noise.</param>
    /// <param name="device">Where the network is.</param>
    /// <param name="createOptimizer">The optimizer (AdamW, Adam) over the parameters.</param>
    /// <param name="learningRate">The learning rate of each step, set on the optimizer before it steps.</param>
    /// <param name="gradientClipNorm">Gradients are rescaled to a global L2 norm of at most this; 0 measures the norm only.</param>
    protected TrainingLoop(nn.Module network, long seed, Device device, Func<Parameter[], OptimizerHelper> createOptimizer,
        LearningRatePlan learningRate, double gradientClipNorm = 0)
    {
        _network = network;
        Device = device;
        Generator = new Generator((ulong)seed, CPU);
        _parameters = network.parameters().ToArray();
        Optimizer = createOptimizer(_parameters);
        _learningRate = learningRate;
        _gradientClipNorm = gradientClipNorm;
    }

    /// <summary>Where the network is; batches are moved here.</summary>
    protected Device Device { get; }

    /// <summary>The CPU generator of the steps' randomness (saved in checkpoints, so runs are reproducible and resumable).</summary>
    protected Generator Generator { get; }

    /// <summary>The optimizer.</summary>
    protected OptimizerHelper Optimizer { get; }

    /// <summary>Optimizer steps taken.</summary>
    public long Step { get; private set; }

    /// <summary>How often a step was recomputed because its loss or gradients were not finite.</summary>
    public int Retries { get; private set; }

    /// <summary>The first line of the last libtorch error that made a step recompute (null if none).</summary>
    public string? LastRetryReason { get; private set; }

    /// <summary>The loss of the last successful step (NaN before the first).</summary>
    public float LastFiniteLoss { get; private set; } = float.NaN;

    /// <summary>The learning rate of optimizer step <paramref name="step"/> (0-based; <see cref="LearningRateCurve.At"/>).</summary>
    public double LearningRateAt(long step) => _learningRate.At(step);

    /// <summary>The learning rate the optimizer used at its last step.</summary>
    public double CurrentLearningRate => Optimizer.ParamGroups.First().LearningRate;

    /// <summary>
    /// One optimizer step: <paramref name="attempt"/> computes the batch's loss (in a dispose scope of its own); a finite loss is
    /// back-propagated and the gradients clipped. A non-finite loss or gradient norm is recomputed, up to
    /// <see cref="MaxAttempts"/> tries: on some machines (seen on AMD EPYC VMs) the CPU kernels return NaN at random now and
    /// then (see TorchRuntime), a fault that does not repeat, while a failure that persists is a real divergence (or NaN
    /// input) and throws <see cref="NonFiniteLossException"/> with the weights untouched. Then the learning rate of this step
    /// is set, the optimizer steps, <see cref="AfterOptimizerStep"/> runs and the step counts. Returns the loss.
    /// </summary>
    /// <param name="attempt">The loss of the batch, recomputed from the same inputs on each try.</param>
    /// <param name="succeeded">Runs inside the successful try's scope (to read statistics of its tensors).</param>
    /// <param name="network">Names the network in the exception's message (null: "the loss", "the gradients").</param>
    /// <param name="lossName">Names the loss in the exception's message when <paramref name="network"/> is set.</param>
    protected float OptimizerStep(Func<Tensor> attempt, Action? succeeded = null, string? network = null, string lossName = "loss")
    {
        float lossValue = float.NaN;
        for (int tries = 1; ; tries++)
        {
            using var attemptScope = NewDisposeScope();
            try
            {
                var loss = attempt();
                lossValue = loss.item<float>();
                Optimizer.zero_grad();
                if (float.IsFinite(lossValue))
                {
                    loss.backward();
                    AfterBackward();
                    double norm = nn.utils.clip_grad_norm_(_parameters, _gradientClipNorm > 0 ? _gradientClipNorm : double.PositiveInfinity);
                    if (double.IsFinite(norm))
                    {
                        succeeded?.Invoke();
                        break;
                    }
                }
            }
            catch (System.Runtime.InteropServices.ExternalException e) when (tries < MaxAttempts)
            {
                // A libtorch error in the forward or backward pass. TorchSharp's operators pass implicit Scalar temporaries
                // (e.g. the alpha of a + b) that a concurrent garbage collection can free while libtorch reads them (see
                // ScalarSafeOptimizers): the step fails once and succeeds when recomputed. The retry starts from zeroed
                // gradients; an error that repeats is real and is thrown.
                Optimizer.zero_grad();
                AfterFailedAttempt();
                LastRetryReason = e.Message.Split('\n')[0];
                Retries++;
                continue;
            }
            if (tries == MaxAttempts)
            {
                Optimizer.zero_grad();
                throw NonFiniteLossException.AfterRetries(Step + 1, lossValue, LastFiniteLoss, MaxAttempts, network, lossName);
            }
            Retries++;
        }
        foreach (var group in Optimizer.ParamGroups) group.LearningRate = LearningRateAt(Step);
        Optimizer.step();
        AfterOptimizerStep();
        Step++;
        LastFiniteLoss = lossValue;
        return lossValue;
    }

    /// <summary>Runs after an attempt that libtorch failed, before it is recomputed (mixed precision clears its copy's gradients).</summary>
    protected virtual void AfterFailedAttempt()
    {
    }

    /// <summary>Runs after the backward pass, before the gradients are clipped (mixed precision hands them to the master weights).</summary>
    protected virtual void AfterBackward()
    {
    }

    /// <summary>Runs after each optimizer step (the EMA update).</summary>
    protected virtual void AfterOptimizerStep()
    {
    }

    /// <summary>Counters a checkpoint holds beyond the step (written right after it; the EMA's update count).</summary>
    protected virtual void WriteCounters(BinaryWriter writer)
    {
    }

    /// <summary>Reads what <see cref="WriteCounters"/> wrote.</summary>
    protected virtual void ReadCounters(BinaryReader reader)
    {
    }

    /// <summary>The modules a checkpoint holds, in order, with how errors name them: the trained network, then any other
    /// (the EMA weights).</summary>
    protected virtual IEnumerable<(nn.Module Module, string What)> CheckpointModules => new[] { (_network, "The checkpoint's weights") };

    /// <summary>Writes the loop's full state: step, counters, generator, weights (and EMA), optimizer.</summary>
    public void SaveState(BinaryWriter writer)
    {
        writer.Write(Step);                       // long: optimizer steps
        WriteCounters(writer);                    // e.g. long: EMA updates
        using (var state = Generator.get_state())
        {
            var bytes = state.data<byte>().ToArray();
            writer.Write(bytes.Length);           // int + bytes: generator state
            writer.Write(bytes);
        }
        foreach (var (module, _) in CheckpointModules)
            module.save(writer);                  // trained weights (then EMA weights)
        Optimizer.save_state_dict(writer);        // Adam(W) moments
    }

    /// <summary>Restores the state written by <see cref="SaveState"/>.</summary>
    public void LoadState(BinaryReader reader)
    {
        Step = reader.ReadInt64();
        ReadCounters(reader);
        int n = reader.ReadInt32();
        if (n < 1 || n > 1 << 20)
            throw new InvalidDataException($"The checkpoint's generator state has {n} bytes; expected 1..{1 << 20} (a few kilobytes).");
        var bytes = reader.ReadBytes(n);
        if (bytes.Length != n) throw new EndOfStreamException("Checkpoint is truncated (generator state).");
        using (var state = tensor(bytes, dtype: uint8))
            Generator.set_state(state);
        foreach (var (module, what) in CheckpointModules)
            LoadChecked(reader, module, what);
        Optimizer.load_state_dict(reader);
    }

    /// <summary>Checks the tensors' names, shapes and sizes (<see cref="Persistence.TorchWeightsFormat"/>, nothing allocated by a
    /// size read from the file) when the stream can seek back, then loads them.</summary>
    private static void LoadChecked(BinaryReader reader, nn.Module module, string what)
    {
        if (reader.BaseStream.CanSeek)
        {
            long start = reader.BaseStream.Position;
            var expected = module.state_dict().Select(kv => (kv.Key, kv.Value.shape)).ToList();
            Persistence.TorchWeightsFormat.Check(reader, expected, what);
            reader.BaseStream.Position = start;
        }
        module.load(reader);
    }

    /// <inheritdoc/>
    public virtual void Dispose()
    {
        Generator.Dispose();
        (Optimizer as IDisposable)?.Dispose();
    }
}
