using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;

namespace Microsoft.ML.Diffusion.Sampling;

/// <summary>Builds the scheduler a <see cref="SamplerOptions"/> asks for, with its timesteps set, from the sampler's
/// <see cref="SamplerRegistry"/> row. A null <see cref="SamplerOptions.Spacing"/> takes the row's default spacing.</summary>
internal static class SchedulerFactory
{
    /// <summary>Creates and configures the scheduler; throws for invalid options.</summary>
    /// <param name="schedule">The forward-process schedule the model was trained with.</param>
    /// <param name="options">Sampler, steps, spacing, eta, clipping and thresholding.</param>
    /// <param name="prediction">What the model predicts (the <see cref="DiffusionTrainer.Options.Prediction"/> it was trained with).</param>
    /// <param name="variance">The model's reverse-step variance (<see cref="DiffusionTrainer.Options.Variance"/>): DDPM uses it;
    /// the other samplers use only the prediction half of a learned-variance output.</param>
    /// <param name="objective">The model's training objective: the sampler must be one of its samplers (<see cref="SamplerInfo.Objective"/>).</param>
    public static IDiffusionScheduler Create(DiffusionSchedule schedule, SamplerOptions options, PredictionType prediction = PredictionType.Epsilon,
        VarianceType variance = VarianceType.FixedSmall, DiffusionObjective objective = DiffusionObjective.Ddpm)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(schedule.Timesteps);
        var row = SamplerRegistry.Get(options.Sampler, nameof(options));
        SamplerRegistry.CheckObjective(row, objective, nameof(options));
        var scheduler = row.Create(new SchedulerArguments(schedule, options, options.Spacing ?? row.DefaultSpacing, prediction, variance));
        scheduler.SetTimesteps(options.ResolveSteps(schedule.Timesteps));
        return scheduler;
    }
}
