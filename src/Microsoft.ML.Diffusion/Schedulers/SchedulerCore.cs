using System.Collections.ObjectModel;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>Shared pieces of the schedulers: leading timestep spacing, argument checks, and tensor-times-double
/// arithmetic that disposes the Scalars it creates (implicit double-to-Scalar conversions wait for the GC).</summary>
internal static class SchedulerCore
{
    /// <summary>Leading spacing (diffusers' default for DDPM and DDIM): t_i = i * (T / steps) for i = steps - 1 .. 0.</summary>
    public static (ReadOnlyCollection<int> Timesteps, int StepRatio) LeadingTimesteps(int trainTimesteps, int steps)
    {
        if (steps < 1 || steps > trainTimesteps)
        {
            throw new ArgumentOutOfRangeException(nameof(steps), steps,
                $"The number of sampling steps must lie between 1 and the schedule's {trainTimesteps} timesteps; got {steps}.");
        }

        int ratio = trainTimesteps / steps;
        var timesteps = new int[steps];
        for (int i = 0; i < steps; i++)
        {
            timesteps[i] = (steps - 1 - i) * ratio;
        }

        return (Array.AsReadOnly(timesteps), ratio);
    }

    public static int Previous(int timestep, int stepRatio, int trainTimesteps)
    {
        CheckTimestep(timestep, trainTimesteps);
        int prev = timestep - stepRatio;
        return prev < 0 ? -1 : prev;
    }

    public static void CheckTimestep(int timestep, int trainTimesteps)
    {
        if (timestep < 0 || timestep >= trainTimesteps)
        {
            throw new ArgumentOutOfRangeException(nameof(timestep), timestep,
                $"The timestep must lie between 0 and {trainTimesteps - 1} (T = {trainTimesteps}); got {timestep}.");
        }
    }

    public static void CheckStepArguments(Tensor modelOutput, Tensor sample)
    {
        ArgumentNullException.ThrowIfNull(modelOutput);
        ArgumentNullException.ThrowIfNull(sample);
        if (!modelOutput.shape.SequenceEqual(sample.shape))
        {
            throw new ArgumentException(
                $"modelOutput must have the shape of sample [{string.Join(", ", sample.shape)}]; got [{string.Join(", ", modelOutput.shape)}].",
                nameof(modelOutput));
        }
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

    /// <summary>a * x + b * y, keeping x's dtype.</summary>
    public static Tensor Combine(double a, Tensor x, double b, Tensor y)
    {
        using Scalar sa = a.ToScalar();
        using Scalar sb = b.ToScalar();
        return x.mul(sa).add_(y, sb);
    }

    /// <summary>x + b * y, in place on x.</summary>
    public static Tensor AddScaled_(Tensor x, double b, Tensor y)
    {
        using Scalar sb = b.ToScalar();
        return x.add_(y, sb);
    }

    /// <summary>x clamped to [-1, 1].</summary>
    public static Tensor ClampUnit(Tensor x)
    {
        using Scalar lo = (-1.0).ToScalar();
        using Scalar hi = 1.0.ToScalar();
        return x.clamp(lo, hi);
    }
}
