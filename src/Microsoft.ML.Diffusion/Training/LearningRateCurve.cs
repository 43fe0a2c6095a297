namespace Microsoft.ML.Diffusion.Training;

/// <summary>The learning rate at each optimizer step: a linear warm-up, then constant (optionally with a linear cool-down to
/// zero over the run's last steps) or a half-cosine decay to zero.</summary>
internal static class LearningRateCurve
{
    /// <summary>
    /// The learning rate used by optimizer step <paramref name="step"/> (0-based): <c>peak (step + 1) / warmup</c> during
    /// the warm-up; then <paramref name="peak"/> (<see cref="LearningRateSchedule.Constant"/>) or
    /// <c>peak (1 + cos(pi p)) / 2</c> with p = (step - warmup) / (total - warmup), the progress after the warm-up
    /// (<see cref="LearningRateSchedule.Cosine"/>; SGDR eq. 5 with eta_min = 0).
    /// </summary>
    public static double At(long step, double peak, long warmup, LearningRateSchedule schedule, long? totalSteps)
        => At(step, peak, warmup, schedule, totalSteps, decaySteps: 0);

    /// <summary>
    /// As above; with <see cref="LearningRateSchedule.Constant"/> and <paramref name="decaySteps"/> D &gt; 0 the last D steps of
    /// the run (never the warm-up) cool down linearly: <c>peak (total - step) / D</c> for step &gt;= total - D, zero past the end
    /// (the warmup-stable-decay curve; Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
    /// Durations", sec. 3). Before the cool-down the curve is the constant one, so a constant run continues into it exactly.
    /// </summary>
    public static double At(long step, double peak, long warmup, LearningRateSchedule schedule, long? totalSteps, long decaySteps)
    {
        if (step < warmup) return peak * (step + 1) / warmup;
        if (schedule == LearningRateSchedule.Constant)
        {
            if (decaySteps <= 0) return peak;
            long end = totalSteps ?? throw new InvalidOperationException("A learning-rate cool-down needs the run's total step count.");
            long start = Math.Max(warmup, end - decaySteps);
            if (step < start) return peak;
            return end <= start ? peak : peak * Math.Max(0, end - step) / (double)(end - start);
        }

        long total = totalSteps ?? throw new InvalidOperationException("A cosine learning-rate schedule needs the run's total step count.");
        if (total <= warmup) return peak;
        double progress = Math.Min(1.0, (step - warmup) / (double)(total - warmup));
        return peak * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}

/// <summary>A run's learning-rate curve: <paramref name="Peak"/> after <paramref name="WarmupSteps"/> warm-up steps, constant
/// (cooling down linearly over the last <paramref name="DecaySteps"/>) or decaying to zero at <paramref name="TotalSteps"/>
/// (<see cref="LearningRateCurve.At(long, double, long, LearningRateSchedule, long?, long)"/>).</summary>
internal readonly record struct LearningRatePlan(double Peak, long WarmupSteps = 0, LearningRateSchedule Schedule = LearningRateSchedule.Constant,
    long? TotalSteps = null, long DecaySteps = 0)
{
    /// <summary>The learning rate of optimizer step <paramref name="step"/> (0-based).</summary>
    public double At(long step) => LearningRateCurve.At(step, Peak, WarmupSteps, Schedule, TotalSteps, DecaySteps);
}
