namespace Microsoft.ML.Diffusion;

/// <summary>How the AdamW learning rate changes over training, after the linear warm-up of
/// <see cref="DiffusionTrainer.Options.LearningRateWarmupSteps"/>.</summary>
public enum LearningRateSchedule
{
    /// <summary>The learning rate stays at <see cref="DiffusionTrainer.Options.LearningRate"/> (after the warm-up).</summary>
    Constant,
    /// <summary>Half-cosine decay from the learning rate to zero at the run's last step (Loshchilov &amp; Hutter 2017, SGDR eq. 5
    /// without restarts; diffusers' <c>get_cosine_schedule_with_warmup</c>). The last step is the total of the run: Epochs
    /// times the batches per epoch, or MaxSteps when smaller; raising Epochs to continue a run stretches the decay.</summary>
    Cosine,
}
