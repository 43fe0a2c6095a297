using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;

namespace Microsoft.ML.Diffusion.Sampling;

/// <summary>Builds the scheduler a <see cref="SamplerOptions"/> asks for, with its timesteps set. A null
/// <see cref="SamplerOptions.Spacing"/> keeps the scheduler's own default spacing.</summary>
internal static class SchedulerFactory
{
    /// <summary>Creates and configures the scheduler; throws for invalid options.</summary>
    /// <param name="schedule">The forward-process schedule the model was trained with.</param>
    /// <param name="options">Sampler, steps, spacing, eta, clipping and thresholding.</param>
    /// <param name="prediction">What the model predicts (the <see cref="DiffusionTrainer.Options.Prediction"/> it was trained with).</param>
    /// <param name="variance">The model's reverse-step variance (<see cref="DiffusionTrainer.Options.Variance"/>): DDPM uses it;
    /// DDIM and DPM-Solver++ use only the prediction half of a learned-variance output.</param>
    public static IDiffusionScheduler Create(DiffusionSchedule schedule, SamplerOptions options, PredictionType prediction = PredictionType.Epsilon,
        VarianceType variance = VarianceType.FixedSmall)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(schedule.Timesteps);
        bool dyn = options.DynamicThresholding;
        IDiffusionScheduler scheduler = options.Sampler switch
        {
            SamplerKind.Ddpm => options.Spacing is TimestepSpacing ddpmSpacing
                ? new DdpmScheduler(schedule, variance, options.ClipSample, ddpmSpacing, prediction, dyn)
                : new DdpmScheduler(schedule, variance, options.ClipSample, prediction: prediction, dynamicThresholding: dyn),
            SamplerKind.Ddim => options.Spacing is TimestepSpacing ddimSpacing
                ? new DdimScheduler(schedule, options.Eta, options.ClipSample, ddimSpacing, prediction, dyn)
                : new DdimScheduler(schedule, options.Eta, options.ClipSample, prediction: prediction, dynamicThresholding: dyn),
            SamplerKind.DpmSolverPlusPlus => options.Spacing is TimestepSpacing dpmSpacing
                ? new DpmSolverMultistepScheduler(schedule, options.ClipSample, dpmSpacing, prediction, dyn)
                : new DpmSolverMultistepScheduler(schedule, options.ClipSample, prediction: prediction, dynamicThresholding: dyn),
            _ => throw new ArgumentOutOfRangeException(nameof(options), options.Sampler, "Unknown sampler."),
        };
        scheduler.SetTimesteps(options.ResolveSteps(schedule.Timesteps));
        return scheduler;
    }
}
