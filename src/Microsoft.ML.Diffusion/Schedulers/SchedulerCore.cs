using System.Collections.ObjectModel;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>Shared pieces of the schedulers: timestep spacing, argument checks, and tensor-times-double
/// arithmetic that disposes the Scalars it creates (implicit double-to-Scalar conversions wait for the GC).</summary>
internal static class SchedulerCore
{
    /// <summary>
    /// The <paramref name="steps"/> timesteps of <paramref name="spacing"/> (Lin et al. 2024, table 2), in descending order.
    /// Computed as numpy computes diffusers' lists (arange/linspace in float64, round half to even), except that
    /// Trailing always has exactly <paramref name="steps"/> elements (numpy's arange with a fractional step sometimes
    /// yields one more, ending in -1).
    /// </summary>
    public static ReadOnlyCollection<int> SpacedTimesteps(TimestepSpacing spacing, int trainTimesteps, int steps)
    {
        if (steps < 1 || steps > trainTimesteps)
        {
            throw new ArgumentOutOfRangeException(nameof(steps), steps,
                $"The number of sampling steps must lie between 1 and the schedule's {trainTimesteps} timesteps; got {steps}.");
        }

        var timesteps = new int[steps];
        switch (spacing)
        {
            case TimestepSpacing.Leading:
            {
                // arange(0, S) * (T // S), reversed (steps_offset 0).
                int ratio = trainTimesteps / steps;
                for (int i = 0; i < steps; i++)
                {
                    timesteps[i] = (steps - 1 - i) * ratio;
                }

                break;
            }

            case TimestepSpacing.Trailing:
            {
                // round(arange(T, 0, -T/S)) - 1: numpy's arange element i is start + i * step.
                double step = -(double)trainTimesteps / steps;
                for (int i = 0; i < steps; i++)
                {
                    timesteps[i] = (int)Math.Round(trainTimesteps + i * step, MidpointRounding.ToEven) - 1;
                }

                break;
            }

            case TimestepSpacing.Linspace:
            {
                // round(linspace(0, T - 1, S)), reversed: numpy's element j is j * ((T - 1)/(S - 1)), the last set to T - 1 exactly.
                int last = trainTimesteps - 1;
                double step = steps > 1 ? (double)last / (steps - 1) : 0.0;
                for (int j = 0; j < steps; j++)
                {
                    double v = steps > 1 && j == steps - 1 ? last : j * step;
                    timesteps[steps - 1 - j] = (int)Math.Round(v, MidpointRounding.ToEven);
                }

                break;
            }

            default:
                throw UnknownSpacing(spacing, nameof(spacing));
        }

        return Array.AsReadOnly(timesteps);
    }

    /// <summary>Throws unless <paramref name="spacing"/> is a defined <see cref="TimestepSpacing"/>.</summary>
    public static TimestepSpacing CheckSpacing(TimestepSpacing spacing, string paramName) =>
        Enum.IsDefined(spacing) ? spacing : throw UnknownSpacing(spacing, paramName);

    private static ArgumentOutOfRangeException UnknownSpacing(TimestepSpacing spacing, string paramName) =>
        new(paramName, spacing, $"Unknown timestep spacing {spacing}; expected one of {string.Join(", ", Enum.GetNames<TimestepSpacing>())}.");

    /// <summary>
    /// The timestep a step from <paramref name="timestep"/> lands on: the largest element of the descending list
    /// <paramref name="timesteps"/> below it, i.e. the next element when <paramref name="timestep"/> is in the list,
    /// or -1 (x_0) after the last.
    /// </summary>
    public static int Previous(IReadOnlyList<int> timesteps, int timestep, int trainTimesteps)
    {
        CheckTimestep(timestep, trainTimesteps);
        int k = IndexBelow(timesteps, timestep);
        return k >= 0 ? timesteps[k] : -1;
    }

    /// <summary>Index of the first element of the descending list <paramref name="timesteps"/> that is below <paramref name="timestep"/>, or -1 if none is.</summary>
    public static int IndexBelow(IReadOnlyList<int> timesteps, int timestep)
    {
        int lo = 0, hi = timesteps.Count;                               // binary search: the list is strictly descending
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (timesteps[mid] < timestep)
            {
                hi = mid;
            }
            else
            {
                lo = mid + 1;
            }
        }

        return lo < timesteps.Count ? lo : -1;
    }

    public static void CheckTimestep(int timestep, int trainTimesteps)
    {
        if (timestep < 0 || timestep >= trainTimesteps)
        {
            throw new ArgumentOutOfRangeException(nameof(timestep), timestep,
                $"The timestep must lie between 0 and {trainTimesteps - 1} (T = {trainTimesteps}); got {timestep}.");
        }
    }

    /// <summary>
    /// Checks that <paramref name="modelOutput"/> is shaped like <paramref name="sample"/> [B, C, ...], or is a learned-variance
    /// output [B, 2C, ...] (the prediction, then the variance channels; see <see cref="SplitOutput"/>).
    /// </summary>
    public static void CheckStepArguments(Tensor modelOutput, Tensor sample)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        if (!modelOutput.shape.SequenceEqual(sample.shape) && !IsLearnedVarianceShape(modelOutput, sample))
        {
            throw new ArgumentException(
                $"modelOutput must have the shape of sample [{string.Join(", ", sample.shape)}], or twice its channels (dimension 1) for a " +
                $"learned-variance model; got [{string.Join(", ", modelOutput.shape)}].",
                nameof(modelOutput));
        }
    }

    private static bool IsLearnedVarianceShape(Tensor modelOutput, Tensor sample)
    {
        if (sample.dim() < 2 || modelOutput.dim() != sample.dim() || modelOutput.shape[1] != 2 * sample.shape[1])
        {
            return false;
        }

        for (int i = 0; i < sample.dim(); i++)
        {
            if (i != 1 && modelOutput.shape[i] != sample.shape[i])
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// The one place where a model output is split: for an output shaped like <paramref name="sample"/> returns (it, null);
    /// for a learned-variance output [B, 2C, ...] returns (channels 0..C-1, the prediction; channels C..2C-1, the raw
    /// variance output r in [-1, 1] of Improved DDPM section 3.1). Both halves are views in the caller's dispose scope.
    /// </summary>
    public static (Tensor Prediction, Tensor? Variance) SplitOutput(Tensor modelOutput, Tensor sample)
    {
        CheckStepArguments(modelOutput, sample);
        if (modelOutput.shape[1] == sample.shape[1] && modelOutput.shape.SequenceEqual(sample.shape))
        {
            return (modelOutput, null);
        }

        long c = sample.shape[1];
        return (modelOutput.narrow(1, 0, c), modelOutput.narrow(1, c, c));
    }

    public static Tensor CheckNoise(Tensor? noise, Tensor sample, string scheduler)
    {
        if (noise is null)
        {
            throw new ArgumentNullException(nameof(noise),
                $"{scheduler} adds fresh Gaussian noise at this step (NeedsNoise is true): pass a standard normal tensor shaped like the sample.");
        }

        if (!noise.shape.SequenceEqual(sample.shape))
        {
            throw new ArgumentException(
                $"noise must have the shape of sample [{string.Join(", ", sample.shape)}]; got [{string.Join(", ", noise.shape)}].",
                nameof(noise));
        }

        return noise;
    }

    /// <summary>The previous sample of a step's output, disposing the predicted x_0 (for the <see cref="IDiffusionScheduler.Step"/> form).</summary>
    public static Tensor PrevOnly(SchedulerOutput output)
    {
        if (!ReferenceEquals(output.PredictedX0, output.PrevSample))
        {
            output.PredictedX0.Dispose();
        }

        return output.PrevSample;
    }

    /// <summary>a * x + b * y, keeping x's dtype.</summary>
    public static Tensor Combine(double a, Tensor x, double b, Tensor y)
    {
        using Scalar sa = a.ToScalar();
        using Scalar sb = b.ToScalar();
        return x.mul(sa).add_(y, sb);
    }

    /// <summary>Throws unless <paramref name="index"/> is a loop position of <paramref name="timesteps"/>; returns the timestep there.</summary>
    public static int CheckIndex(IReadOnlyList<int> timesteps, int index)
    {
        if (index < 0 || index >= timesteps.Count)
            throw new ArgumentOutOfRangeException(nameof(index), index, $"The loop position must lie between 0 and {timesteps.Count - 1}; got {index}.");
        return timesteps[index];
    }

    /// <summary>q(x_t | x_0) at <paramref name="alphaBar"/> (DDPM eq. 4): sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) noise, the coefficients
    /// computed in float64; a new tensor with x0's dtype and device.</summary>
    public static Tensor AddNoiseVp(Tensor x0, Tensor noise, double alphaBar)
    {
        CheckNoiseShape(x0, noise);
        return Combine(Math.Sqrt(alphaBar), x0, Math.Sqrt(1.0 - alphaBar), noise);
    }

    /// <summary>x_0 + sigma noise: the forward process in sigma space (Karras et al. 2022, EDM, section 2); a new tensor.</summary>
    public static Tensor AddNoiseSigma(Tensor x0, Tensor noise, double sigma)
    {
        CheckNoiseShape(x0, noise);
        return Combine(1.0, x0, sigma, noise);
    }

    private static void CheckNoiseShape(Tensor x0, Tensor noise)
    {
        ArgumentNullException.ThrowIfNull(x0);
        ArgumentNullException.ThrowIfNull(noise);
        if (!x0.shape.SequenceEqual(noise.shape))
            throw new ArgumentException($"noise must have the shape of x0 [{string.Join(", ", x0.shape)}]; got [{string.Join(", ", noise.shape)}].", nameof(noise));
    }

    /// <summary>x + b * y, in place on x.</summary>
    public static Tensor AddScaled_(Tensor x, double b, Tensor y)
    {
        using Scalar sb = b.ToScalar();
        return x.add_(y, sb);
    }

    /// <summary>Throws unless <paramref name="prediction"/> is a defined <see cref="PredictionType"/>.</summary>
    public static PredictionType CheckPrediction(PredictionType prediction, string paramName) =>
        Enum.IsDefined(prediction)
            ? prediction
            : throw new ArgumentOutOfRangeException(paramName, prediction,
                $"Unknown prediction type {prediction}; expected one of {string.Join(", ", Enum.GetNames<PredictionType>())}.");

    /// <summary>
    /// The (x0_hat, eps_hat) that the network output <paramref name="modelOutput"/> of kind <paramref name="prediction"/>
    /// implies at a timestep with cumulative product <paramref name="alphaBar"/>, for the sample x_t <paramref name="sample"/>.
    /// With alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar) and x_t = alpha x_0 + sigma eps (DDPM eq. 4):
    /// epsilon: x_0 = (x_t - sigma eps)/alpha; sample: eps = (x_t - alpha x_0)/sigma; v = alpha eps - sigma x_0
    /// (Salimans &amp; Ho 2022, section 4): x_0 = alpha x_t - sigma v, eps = sigma x_t + alpha v (alpha^2 + sigma^2 = 1).
    /// Both tensors belong to the caller's dispose scope; X0 is always a new tensor, Eps may be <paramref name="modelOutput"/> itself.
    /// </summary>
    public static (Tensor X0, Tensor Eps) ToX0AndEps(Tensor modelOutput, Tensor sample, double alphaBar, PredictionType prediction)
    {
        double alpha = Math.Sqrt(alphaBar);
        double sigma = Math.Sqrt(1.0 - alphaBar);
        return prediction switch
        {
            PredictionType.Epsilon => (Combine(1.0 / alpha, sample, -sigma / alpha, modelOutput), modelOutput),
            PredictionType.Sample => (modelOutput.clone(), EpsFromX0(sample, modelOutput, alphaBar)),
            PredictionType.VPrediction => (Combine(alpha, sample, -sigma, modelOutput), Combine(sigma, sample, alpha, modelOutput)),
            _ => throw new ArgumentOutOfRangeException(nameof(prediction), prediction, $"Unknown prediction type {prediction}."),
        };
    }

    /// <summary>eps = (x_t - sqrt(alpha_bar) x_0) / sqrt(1 - alpha_bar): DDPM eq. 4 solved for eps.</summary>
    public static Tensor EpsFromX0(Tensor sample, Tensor x0, double alphaBar)
    {
        double sigma = Math.Sqrt(1.0 - alphaBar);
        return Combine(1.0 / sigma, sample, -Math.Sqrt(alphaBar) / sigma, x0);
    }

    /// <summary>Percentile of |x_0| used by dynamic thresholding (Imagen, section 2.3; diffusers' dynamic_thresholding_ratio default).</summary>
    public const double DynamicThresholdPercentile = 0.995;

    /// <summary>
    /// Thresholds a predicted x_0: dynamic thresholding when <paramref name="dynamic"/> (it replaces clipping), else
    /// clamping to [-1, 1] when <paramref name="clip"/>, else nothing. Returns <paramref name="x0"/> itself when unchanged.
    /// </summary>
    /// <param name="x0">The predicted x_0, [B, ...].</param>
    /// <param name="clip">Clamp to [-1, 1] (when not dynamic).</param>
    /// <param name="dynamic">Dynamic thresholding (see <see cref="DynamicThreshold"/>).</param>
    /// <param name="ratio">diffusers' dynamic_thresholding_ratio: the quantile of |x_0| that sets s.</param>
    /// <param name="maxValue">diffusers' sample_max_value: the largest s (no bound when infinite).</param>
    public static Tensor ThresholdX0(Tensor x0, bool clip, bool dynamic, double ratio = DynamicThresholdPercentile,
        double maxValue = double.PositiveInfinity) =>
        dynamic ? DynamicThreshold(x0, ratio, maxValue) : clip ? ClampUnit(x0) : x0;

    /// <summary>
    /// Dynamic thresholding (Saharia et al. 2022, "Imagen", section 2.3), as diffusers' _threshold_sample: per sample,
    /// s = clamp(the <paramref name="percentile"/> quantile of |x_0| over all its elements, 1, <paramref name="maxValue"/>),
    /// then x_0 = clamp(x_0, -s, s) / s. The quantile interpolates linearly between order statistics at position p (n - 1), as
    /// numpy and torch.quantile do; the clamp is torch's (min(max(q, 1), maxValue), so a maxValue below 1 sets s = maxValue).
    /// </summary>
    /// <param name="x0">Predicted samples, [B, ...].</param>
    /// <param name="percentile">The quantile p in [0, 1]; 0.995 in Imagen (diffusers' dynamic_thresholding_ratio).</param>
    /// <param name="maxValue">The largest s, &gt; 0 (diffusers' sample_max_value; Imagen has no bound: infinity).</param>
    public static Tensor DynamicThreshold(Tensor x0, double percentile = DynamicThresholdPercentile, double maxValue = double.PositiveInfinity)
    {
        ArgumentNullException.ThrowIfNull(x0);
        if (!(percentile >= 0 && percentile <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(percentile), percentile, "The percentile must lie in [0, 1].");
        }

        if (!(maxValue > 0))
        {
            throw new ArgumentOutOfRangeException(nameof(maxValue), maxValue, "The largest threshold (sample_max_value) must be > 0.");
        }

        using var scope = NewDisposeScope();
        long b = x0.shape[0];
        var flat = x0.abs().reshape(b, -1);
        long n = flat.shape[1];
        var sorted = flat.sort(1).Values;
        double pos = percentile * (n - 1);
        long lo = (long)Math.Floor(pos);
        long hi = Math.Min(lo + 1, n - 1);
        double frac = pos - lo;
        var low = sorted.select(1, lo);
        var s = frac > 0 ? Combine(1.0 - frac, low, frac, sorted.select(1, hi)) : low;
        using Scalar one = 1.0.ToScalar();
        s = s.clamp_min(one);                                           // s = max(1, percentile)
        if (!double.IsPositiveInfinity(maxValue))
        {
            using Scalar max = maxValue.ToScalar();
            s = s.clamp_max(max);                                       // then min(s, sample_max_value)
        }

        var shape = new long[x0.dim()];
        Array.Fill(shape, 1L);
        shape[0] = b;
        s = s.reshape(shape);
        // clamp to [-s, s], then divide by s.
        return x0.maximum(s.neg()).minimum(s).div(s).MoveToOuterDisposeScope();
    }

    /// <summary>Checks diffusers' dynamic_thresholding_ratio (in [0, 1]) and sample_max_value (&gt; 0, infinity allowed); returns them.</summary>
    public static (double Ratio, double MaxValue) CheckThreshold(double ratio, double maxValue)
    {
        if (!(ratio >= 0 && ratio <= 1))
            throw new ArgumentOutOfRangeException("dynamicThresholdingRatio", ratio, $"The dynamic thresholding ratio must lie in [0, 1]; got {ratio}.");
        if (!(maxValue > 0))
            throw new ArgumentOutOfRangeException("sampleMaxValue", maxValue, $"The sample max value must be > 0; got {maxValue}.");
        return (ratio, maxValue);
    }

    /// <summary>x clamped to [-1, 1].</summary>
    public static Tensor ClampUnit(Tensor x)
    {
        using Scalar lo = (-1.0).ToScalar();
        using Scalar hi = 1.0.ToScalar();
        return x.clamp(lo, hi);
    }
}
