namespace Microsoft.ML.Diffusion;

/// <summary>Thrown when the training loss becomes NaN or infinite.</summary>
public sealed class NonFiniteLossException : InvalidOperationException
{
    /// <summary>Creates the exception for optimizer step <paramref name="step"/>.</summary>
    public NonFiniteLossException(long step, float loss, float lastFiniteLoss, string? what = null)
        : this(step, loss, lastFiniteLoss,
               $"Training stopped at step {step}: {what ?? $"the loss is {loss}"}" +
               (float.IsNaN(lastFiniteLoss) ? " at the first step" : $"; the last finite loss was {lastFiniteLoss:G6} at step {step - 1}") +
               ". Lower the learning rate, check the input for NaN pixels, or resume from the last checkpoint.", null)
    {
    }

    /// <summary>The exception for step <paramref name="step"/> after <paramref name="attempts"/> tries gave a non-finite loss
    /// <paramref name="lossValue"/>, or a finite loss with non-finite gradients. <paramref name="network"/> names the network in
    /// the message ("the classifier's gradients", "the classifier's <paramref name="lossName"/> is NaN"); null: "the gradients",
    /// "the loss".</summary>
    internal static NonFiniteLossException AfterRetries(long step, float lossValue, float lastFiniteLoss, int attempts,
        string? network = null, string lossName = "loss")
    {
        string owner = network is null ? "the" : $"the {network}'s";
        return float.IsFinite(lossValue)
            ? new NonFiniteLossException(step, float.NaN, lastFiniteLoss,
                $"{owner} gradients are not finite ({attempts} attempts) although the loss is {lossValue:G6}")
            : new NonFiniteLossException(step, lossValue, lastFiniteLoss, network is null ? null : $"{owner} {lossName} is {lossValue}");
    }

    private NonFiniteLossException(long step, float loss, float lastFiniteLoss, string message, string? checkpointPath)
        : base(message)
    {
        StepNumber = step;
        Loss = loss;
        LastFiniteLoss = lastFiniteLoss;
        CheckpointPath = checkpointPath;
    }

    /// <summary>This exception with the last good checkpoint added to its message (<paramref name="checkpointStep"/> null: none was written).</summary>
    internal NonFiniteLossException WithCheckpoint(string path, long? checkpointStep) =>
        new(StepNumber, Loss, LastFiniteLoss,
            Message + (checkpointStep is long s
                ? $" The last good checkpoint (step {s}) is kept in '{path}'."
                : $" No checkpoint was written before the failure ('{path}')."),
            checkpointStep is null ? null : path);

    /// <summary>The checkpoint file kept from before the failure, when training wrote one; null otherwise.</summary>
    public string? CheckpointPath { get; }

    /// <summary>The loss of the step before (NaN when the first step failed).</summary>
    public float LastFiniteLoss { get; }

    /// <summary>The step whose loss was not finite.</summary>
    public long StepNumber { get; }

    /// <summary>The loss value (NaN or infinity).</summary>
    public float Loss { get; }
}
