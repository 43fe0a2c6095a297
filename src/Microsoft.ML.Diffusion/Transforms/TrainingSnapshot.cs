namespace Microsoft.ML.Diffusion;

/// <summary>
/// The state of a <see cref="DiffusionTrainer"/> run at the end of an epoch, passed to
/// <see cref="DiffusionTrainer.Options.EpochCompleted"/>: the place to look at the model in the middle of training (sample a
/// grid, measure a distance, save a milestone model), as diffusers' training scripts validate every N epochs.
/// </summary>
/// <remarks>
/// The snapshot is valid only while the callback runs: <see cref="CreateModel"/> throws after it returned. The models it
/// creates are independent copies that stay valid afterwards.
/// </remarks>
public sealed class TrainingSnapshot
{
    private readonly Func<DiffusionModel> _createModel;
    private bool _expired;

    internal TrainingSnapshot(int epoch, int epochs, long step, float meanLoss, double imagesPerSecond, CancellationToken cancellationToken,
        Func<DiffusionModel> createModel)
    {
        Epoch = epoch;
        Epochs = epochs;
        Step = step;
        MeanLoss = meanLoss;
        ImagesPerSecond = imagesPerSecond;
        CancellationToken = cancellationToken;
        _createModel = createModel;
    }

    /// <summary>The epoch just completed (1-based).</summary>
    public int Epoch { get; }

    /// <summary>Epochs requested.</summary>
    public int Epochs { get; }

    /// <summary>Optimizer steps done (over all epochs, resumed ones included).</summary>
    public long Step { get; }

    /// <summary>The mean loss of the epoch's steps that this Fit call ran (a resumed epoch counts only its remaining steps; NaN
    /// when none ran).</summary>
    public float MeanLoss { get; }

    /// <summary>Training throughput of this Fit call so far.</summary>
    public double ImagesPerSecond { get; }

    /// <summary>The trainer's <see cref="DiffusionTrainer.Options.CancellationToken"/>: pass it to the samplers the callback runs
    /// (<see cref="SamplerOptions.CancellationToken"/>) so that a cancel request also stops them.</summary>
    public CancellationToken CancellationToken { get; }

    /// <summary>
    /// A <see cref="DiffusionModel"/> made from the current EMA weights (the weights the final model samples with), with the
    /// settings the final model will have. It is an independent copy: the caller owns it and may keep it, sample from it, save
    /// it or dispose it; training goes on unaffected (the copy is made without drawing from any random generator). Each call
    /// makes a new copy.
    /// </summary>
    /// <exception cref="InvalidOperationException">The callback that received this snapshot has returned.</exception>
    public DiffusionModel CreateModel()
    {
        if (_expired)
            throw new InvalidOperationException(
                $"This TrainingSnapshot (epoch {Epoch}) is no longer valid: call CreateModel inside the EpochCompleted callback, and keep the model it returns.");
        return _createModel();
    }

    /// <summary>Ends the snapshot's validity (the trainer calls it when the callback returns).</summary>
    internal void Expire() => _expired = true;
}
