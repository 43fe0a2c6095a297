using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;

namespace Microsoft.ML.Diffusion.Sampling;

/// <summary>Builds the scheduler a <see cref="SamplerOptions"/> asks for, with its timesteps set. A null
/// <see cref="SamplerOptions.Spacing"/> keeps the scheduler's own default spacing.</summary>
public static class SchedulerFactory
{
    /// <summary>Creates and configures the scheduler; throws for invalid options.</summary>
    public static IDiffusionScheduler Create(DiffusionSchedule schedule, SamplerOptions options)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(schedule.Timesteps);
        IDiffusionScheduler scheduler = options.Sampler switch
        {
            SamplerKind.Ddpm => options.Spacing is TimestepSpacing ddpmSpacing
                ? new DdpmScheduler(schedule, options.ClipSample, spacing: ddpmSpacing)
                : new DdpmScheduler(schedule, options.ClipSample),
            SamplerKind.Ddim => options.Spacing is TimestepSpacing ddimSpacing
                ? new DdimScheduler(schedule, options.Eta, options.ClipSample, ddimSpacing)
                : new DdimScheduler(schedule, options.Eta, options.ClipSample),
            SamplerKind.DpmSolverPlusPlus => options.Spacing is TimestepSpacing dpmSpacing
                ? new DpmSolverMultistepScheduler(schedule, options.ClipSample, dpmSpacing)
                : new DpmSolverMultistepScheduler(schedule, options.ClipSample),
            _ => throw new ArgumentOutOfRangeException(nameof(options), options.Sampler, "Unknown sampler."),
        };
        scheduler.SetTimesteps(options.ResolveSteps(schedule.Timesteps));
        return scheduler;
    }
}
