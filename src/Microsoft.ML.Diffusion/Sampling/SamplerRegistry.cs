using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;

namespace Microsoft.ML.Diffusion.Sampling;

/// <summary>What a sampler's factory receives: the model's schedule, prediction and variance, the options, and the resolved spacing.</summary>
internal readonly record struct SchedulerArguments(
    DiffusionSchedule Schedule, SamplerOptions Options, TimestepSpacing Spacing, PredictionType Prediction, VarianceType Variance)
{
    /// <summary>The options as a multistep solver's settings (diffusers' names: see <see cref="SamplerOptions"/>).</summary>
    public MultistepSettings Multistep() => new()
    {
        ClipSample = Options.ClipSample, Spacing = Spacing, Prediction = Prediction, DynamicThresholding = Options.DynamicThresholding,
        DynamicThresholdingRatio = Options.DynamicThresholdingRatio, SampleMaxValue = Options.SampleMaxValue,
        UseKarrasSigmas = Options.UseKarrasSigmas, UseLuLambdas = Options.UseLuLambdas, FinalSigmasType = Options.FinalSigmasType,
        LowerOrderFinal = Options.LowerOrderFinal,
    };
}

/// <summary>One sampler: everything the options, their validation, the factory and the CLI know about it.</summary>
/// <param name="Kind">The public enum value.</param>
/// <param name="CliName">The name <c>--sampler</c> accepts.</param>
/// <param name="DisplayName">The name in messages and the README.</param>
/// <param name="DefaultSteps">Steps when <see cref="SamplerOptions.Steps"/> is null, for a model of T timesteps.</param>
/// <param name="DefaultSpacing">Spacing when <see cref="SamplerOptions.Spacing"/> is null.</param>
/// <param name="Capabilities">What it supports beyond plain generation.</param>
/// <param name="Create">Builds the scheduler (its timesteps are set by <see cref="SchedulerFactory"/>).</param>
/// <param name="Objective">The training objective of the models it samples (<see cref="DiffusionObjective.Ddpm"/> unless stated).</param>
internal sealed record SamplerInfo(
    SamplerKind Kind, string CliName, string DisplayName, Func<int, int> DefaultSteps, TimestepSpacing DefaultSpacing,
    SchedulerCapabilities Capabilities, Func<SchedulerArguments, IDiffusionScheduler> Create,
    DiffusionObjective Objective = DiffusionObjective.Ddpm);

/// <summary>
/// The samplers, one row each. Adding a sampler is one scheduler file in Schedulers/, one <see cref="SamplerKind"/> value and one row
/// here; the options, their validation, the factory, the messages and the CLI read the rows.
/// </summary>
internal static class SamplerRegistry
{
    private const SchedulerCapabilities Both = SchedulerCapabilities.RePaint | SchedulerCapabilities.ClassifierGuidance;
    private const SchedulerCapabilities Multistep = SchedulerCapabilities.MultistepOptions | SchedulerCapabilities.ClassifierGuidance;

    /// <summary>All samplers, in the order the CLI lists them.</summary>
    public static readonly IReadOnlyList<SamplerInfo> All = new SamplerInfo[]
    {
        new(SamplerKind.Ddpm, "ddpm", DdpmScheduler.DisplayName, t => t, TimestepSpacing.Leading, Both,
            a => new DdpmScheduler(a.Schedule, a.Variance, a.Options.ClipSample, a.Spacing, a.Prediction, a.Options.DynamicThresholding,
                a.Options.DynamicThresholdingRatio, a.Options.SampleMaxValue)),
        new(SamplerKind.Ddim, "ddim", DdimScheduler.DisplayName, t => Math.Min(50, t), TimestepSpacing.Leading, Both,
            a => new DdimScheduler(a.Schedule, a.Options.Eta, a.Options.ClipSample, a.Spacing, a.Prediction, a.Options.DynamicThresholding,
                a.Options.DynamicThresholdingRatio, a.Options.SampleMaxValue, a.Options.SetAlphaToOne)),
        new(SamplerKind.DpmSolverPlusPlus, "dpm-solver++", DpmSolverMultistepScheduler.DisplayName, t => Math.Min(20, t), TimestepSpacing.Trailing,
            Multistep, a => new DpmSolverMultistepScheduler(a.Schedule, a.Multistep())),
        new(SamplerKind.EulerKarras, "euler-karras", EulerKarrasScheduler.DisplayName, t => Math.Min(25, t), TimestepSpacing.Linspace,
            SchedulerCapabilities.None,
            a => new EulerKarrasScheduler(a.Schedule, a.Options.ClipSample, a.Spacing, a.Prediction, a.Options.DynamicThresholding,
                a.Options.DynamicThresholdingRatio, a.Options.SampleMaxValue)),
        new(SamplerKind.HeunKarras, "heun-karras", HeunKarrasScheduler.DisplayName, t => Math.Min(18, t), TimestepSpacing.Linspace,
            SchedulerCapabilities.None,
            a => new HeunKarrasScheduler(a.Schedule, a.Options.ClipSample, a.Spacing, a.Prediction, a.Options.DynamicThresholding,
                a.Options.DynamicThresholdingRatio, a.Options.SampleMaxValue)),
        new(SamplerKind.EulerAncestral, "euler-ancestral", EulerAncestralScheduler.DisplayName, t => Math.Min(30, t), TimestepSpacing.Linspace,
            SchedulerCapabilities.None,
            a => new EulerAncestralScheduler(a.Schedule, a.Options.ClipSample, a.Spacing, a.Prediction, a.Options.DynamicThresholding,
                a.Options.DynamicThresholdingRatio, a.Options.SampleMaxValue)),
        new(SamplerKind.DpmSolverPlusPlusKarras, "dpm-solver++-karras", DpmSolverMultistepScheduler.DisplayName + " Karras", t => Math.Min(20, t),
            TimestepSpacing.Trailing, SchedulerCapabilities.MultistepOptions,
            a => new DpmSolverMultistepScheduler(a.Schedule, a.Multistep() with { UseKarrasSigmas = true })),
        new(SamplerKind.DpmSolverPlusPlusSde, "dpm-solver++-sde", DpmSolverSdeScheduler.DisplayName, t => Math.Min(25, t), TimestepSpacing.Trailing,
            Multistep, a => new DpmSolverSdeScheduler(a.Schedule, a.Multistep())),
        new(SamplerKind.UniPC, "unipc", UniPcScheduler.DisplayName, t => Math.Min(10, t), TimestepSpacing.Trailing,
            Multistep, a => new UniPcScheduler(a.Schedule, a.Multistep())),
        new(SamplerKind.FlowMatchEuler, "flow-euler", FlowMatchEulerScheduler.DisplayName, t => Math.Min(28, t), TimestepSpacing.Linspace,
            SchedulerCapabilities.None, a => new FlowMatchEulerScheduler(a.Schedule), DiffusionObjective.FlowMatching),
        new(SamplerKind.FlowMatchHeun, "flow-heun", FlowMatchHeunScheduler.DisplayName, t => Math.Min(14, t), TimestepSpacing.Linspace,
            SchedulerCapabilities.None, a => new FlowMatchHeunScheduler(a.Schedule), DiffusionObjective.FlowMatching),
    };

    /// <summary>The row of <paramref name="kind"/>, or null for a value without one.</summary>
    public static SamplerInfo? Find(SamplerKind kind) => All.FirstOrDefault(r => r.Kind == kind);

    /// <summary>The row of <paramref name="kind"/>; throws naming the known samplers.</summary>
    public static SamplerInfo Get(SamplerKind kind, string paramName = "kind") =>
        Find(kind) ?? throw new ArgumentOutOfRangeException(paramName, kind,
            $"Unknown sampler {kind}; expected one of {string.Join(", ", All.Select(r => r.Kind))}.");

    /// <summary>The row whose CLI name is <paramref name="cliName"/> (ordinal), or null.</summary>
    public static SamplerInfo? FindByCliName(string cliName) => All.FirstOrDefault(r => r.CliName == cliName);

    /// <summary>The CLI names, in registry order.</summary>
    public static IReadOnlyList<string> CliNames => All.Select(r => r.CliName).ToArray();

    /// <summary>Network calls of <paramref name="steps"/> steps of <paramref name="row"/>'s sampler (2 steps - 1 for Heun), counted on a
    /// scheduler built for a linear schedule (the count depends on the steps only).</summary>
    public static int NetworkCalls(SamplerInfo row, int steps)
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, Math.Max(steps, 2));
        var scheduler = row.Create(new SchedulerArguments(schedule, new SamplerOptions { Sampler = row.Kind }, row.DefaultSpacing,
            PredictionType.Epsilon, VarianceType.FixedSmall));
        scheduler.SetTimesteps(steps);
        int calls = scheduler.Timesteps.Count;
        (scheduler as IDisposable)?.Dispose();
        return calls;
    }

    /// <summary>"Flow matching Euler, Flow matching Heun": the display names of the samplers of <paramref name="objective"/>.</summary>
    public static string NamesFor(DiffusionObjective objective) =>
        string.Join(", ", All.Where(r => r.Objective == objective).Select(r => $"{r.DisplayName} ({r.Kind})"));

    /// <summary>Throws unless <paramref name="row"/> samples models of <paramref name="objective"/>, naming the sampler, the objective
    /// and the samplers that fit.</summary>
    public static void CheckObjective(SamplerInfo row, DiffusionObjective objective, string paramName = "options")
    {
        if (row.Objective != objective)
            throw new ArgumentException(
                $"SamplerOptions.Sampler is {row.Kind} ({row.DisplayName}), a sampler for {row.Objective} models, but this model was trained with " +
                $"DiffusionObjective.{objective} (DiffusionTrainer.Options.Objective); use one of: {NamesFor(objective)}.", paramName);
    }

    /// <summary>"DDPM, DDIM": the display names of the samplers with <paramref name="capability"/>.</summary>
    public static string NamesWith(SchedulerCapabilities capability) =>
        string.Join(", ", All.Where(r => r.Capabilities.HasFlag(capability)).Select(r => r.DisplayName));
}
