namespace Microsoft.ML.Diffusion;

/// <summary>A training report, sent after every optimizer step.</summary>
/// <param name="Epoch">The current epoch (1-based).</param>
/// <param name="Epochs">Epochs requested.</param>
/// <param name="Step">Optimizer steps done (over all epochs, resumed ones included).</param>
/// <param name="TotalSteps">Optimizer steps the run will take, when the row count is known; otherwise null.</param>
/// <param name="Loss">The loss of the last step.</param>
/// <param name="AverageLoss">The mean loss of this epoch so far.</param>
/// <param name="ImagesPerSecond">Training throughput of this run so far.</param>
public readonly record struct TrainingProgress(int Epoch, int Epochs, long Step, long? TotalSteps, float Loss, float AverageLoss, double ImagesPerSecond)
{
    /// <summary>The learning rate the optimizer used at this step (after warm-up and decay; 0 when not reported).</summary>
    public double LearningRate { get; init; }

    /// <summary>
    /// Steps of this run (since it started or resumed) that were recomputed once because their loss or gradients were not finite
    /// or libtorch raised an error (a transient fault: the recomputed step succeeded; a persistent one stops training).
    /// </summary>
    public int Retries { get; init; }
}
