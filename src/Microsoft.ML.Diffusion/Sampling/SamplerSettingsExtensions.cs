using Microsoft.ML.Diffusion.Sampling;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Converts between <see cref="SamplerOptions"/> and their serialisable part, <see cref="SamplerSettings"/> (what a model zip
/// keeps as its default sampler), and checks saved settings against the sampler rules.
/// </summary>
public static class SamplerSettingsExtensions
{
    /// <summary>The serialisable settings of <paramref name="options"/> (everything but the classifier, the progress reporter and the
    /// cancellation token); diffusers' options at their defaults are left out, so configs without them stay as they were.</summary>
    public static SamplerSettings ToSettings(this SamplerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var defaults = new SamplerOptions();
        return new()
        {
            Sampler = options.Sampler, Steps = options.Steps, Eta = options.Eta, Spacing = options.Spacing, Seed = options.Seed,
            ClipSample = options.ClipSample, BatchSize = options.BatchSize, DynamicThresholding = options.DynamicThresholding,
            GuidanceScale = options.GuidanceScale, Precision = options.Precision,
            DynamicThresholdingRatio = options.DynamicThresholdingRatio == defaults.DynamicThresholdingRatio ? null : options.DynamicThresholdingRatio,
            SampleMaxValue = double.IsPositiveInfinity(options.SampleMaxValue) ? null : options.SampleMaxValue,
            SetAlphaToOne = options.SetAlphaToOne ? null : false, UseKarrasSigmas = options.UseKarrasSigmas, UseLuLambdas = options.UseLuLambdas,
            FinalSigmasType = options.FinalSigmasType, LowerOrderFinal = options.LowerOrderFinal ? null : false,
        };
    }

    /// <summary>New options with <paramref name="settings"/> (absent diffusers options take their defaults).</summary>
    public static SamplerOptions ToOptions(this SamplerSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var options = new SamplerOptions
        {
            Sampler = settings.Sampler, Steps = settings.Steps, Eta = settings.Eta, Spacing = settings.Spacing, Seed = settings.Seed,
            ClipSample = settings.ClipSample, BatchSize = settings.BatchSize, DynamicThresholding = settings.DynamicThresholding,
            GuidanceScale = settings.GuidanceScale, Precision = settings.Precision, SetAlphaToOne = settings.SetAlphaToOne ?? true,
            UseKarrasSigmas = settings.UseKarrasSigmas, UseLuLambdas = settings.UseLuLambdas, FinalSigmasType = settings.FinalSigmasType,
            LowerOrderFinal = settings.LowerOrderFinal ?? true,
        };
        if (settings.DynamicThresholdingRatio is double ratio) options.DynamicThresholdingRatio = ratio;
        if (settings.SampleMaxValue is double max) options.SampleMaxValue = max;
        return options;
    }

    /// <summary>
    /// Throws <see cref="InvalidDataException"/> unless <paramref name="settings"/> are a sampler that <paramref name="config"/>'s
    /// model can run: valid options for its T (<see cref="SamplerOptions.Validate"/>) and a sampler of its objective. Loading a
    /// model checks its default sampler with this after <see cref="DiffusionModelConfig.Validate"/>.
    /// </summary>
    public static void Validate(this SamplerSettings settings, DiffusionModelConfig config)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(config);
        try
        {
            var sampler = settings.ToOptions();
            sampler.Validate(config.Timesteps);
            SamplerRegistry.CheckObjective(SamplerRegistry.Get(sampler.Sampler), config.Objective);
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"The model's default sampler is invalid: {e.Message} The file is corrupt or was edited.", e);
        }
    }
}
