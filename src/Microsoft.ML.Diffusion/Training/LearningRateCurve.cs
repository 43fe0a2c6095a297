namespace Microsoft.ML.Diffusion.Training;

/// <summary>The learning rate at each optimizer step: a linear warm-up, then constant or a half-cosine decay to zero.</summary>
internal static class LearningRateCurve
{
    /// <summary>
    /// The learning rate used by optimizer step <paramref name="step"/> (0-based): <c>peak (step + 1) / warmup</c> during
    /// the warm-up; then <paramref name="peak"/> (<see cref="LearningRateSchedule.Constant"/>) or
    /// <c>peak (1 + cos(pi p)) / 2</c> with p = (step - warmup) / (total - warmup), the progress after the warm-up
    /// (<see cref="LearningRateSchedule.Cosine"/>; SGDR eq. 5 with eta_min = 0).
    /// </summary>
    public static double At(long step, double peak, long warmup, LearningRateSchedule schedule, long? totalSteps)
    {
        if (step < warmup) return peak * (step + 1) / warmup;
        if (schedule == LearningRateSchedule.Constant) return peak;
        long total = totalSteps ?? throw new InvalidOperationException("A cosine learning-rate schedule needs the run's total step count.");
        if (total <= warmup) return peak;
        double progress = Math.Min(1.0, (step - warmup) / (double)(total - warmup));
        return peak * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}

/// <summary>A run's learning-rate curve: <paramref name="Peak"/> after <paramref name="WarmupSteps"/> warm-up steps, constant or
/// decaying to zero at <paramref name="TotalSteps"/> (<see cref="LearningRateCurve.At"/>).</summary>
internal readonly record struct LearningRatePlan(double Peak, long WarmupSteps = 0, LearningRateSchedule Schedule = LearningRateSchedule.Constant,
    long? TotalSteps = null)
{
    /// <summary>The learning rate of optimizer step <paramref name="step"/> (0-based).</summary>
    public double At(long step) => LearningRateCurve.At(step, Peak, WarmupSteps, Schedule, TotalSteps);
}
