using Microsoft.ML.Diffusion.Schedules;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// The variance-exploding view of a VP schedule (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
/// Models", EDM, section 2 and table 1): x_sigma = x_0 + sigma eps with sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), so that
/// x_sigma / sqrt(sigma^2 + 1) is DDPM's x_t. Pure float64 functions, as diffusers' Euler and Heun schedulers compute them in numpy.
/// </summary>
internal static class SigmaSpace
{
    /// <summary>EDM's rho for the Karras discretization (eq. 5; the paper's default 7).</summary>
    public const double Rho = 7.0;

    /// <summary>sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) for t = 0 .. T - 1, increasing; a zero-terminal-SNR schedule's last
    /// alpha_bar (0) counts as 2^-24 (<see cref="DiffusionSchedule.SolverAlphaBar"/>), so sigma_max = 4096 rather than infinity.</summary>
    public static double[] TrainingSigmas(DiffusionSchedule schedule) =>
        Enumerable.Range(0, schedule.Timesteps).Select(schedule.SolverAlphaBar).Select(a => Math.Sqrt((1.0 - a) / a)).ToArray();

    /// <summary>alpha_bar of the VP sample at noise level <paramref name="sigma"/>: 1 / (sigma^2 + 1).</summary>
    public static double AlphaBar(double sigma) => 1.0 / (sigma * sigma + 1.0);

    /// <summary>
    /// EDM eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho for i = 0 .. n - 1 (n = 1
    /// gives sigma_max), decreasing; the final sigma_n = 0 is not included.
    /// </summary>
    public static double[] KarrasSigmas(double sigmaMin, double sigmaMax, int n, double rho = Rho)
    {
        double minInvRho = Math.Pow(sigmaMin, 1.0 / rho);
        double maxInvRho = Math.Pow(sigmaMax, 1.0 / rho);
        var sigmas = new double[n];
        for (int i = 0; i < n; i++)
        {
            double ramp = n > 1 ? (double)i / (n - 1) : 0.0;              // numpy linspace(0, 1, n)
            sigmas[i] = Math.Pow(maxInvRho + ramp * (minInvRho - maxInvRho), rho);
        }

        return sigmas;
    }

    /// <summary>
    /// The continuous timestep of noise level <paramref name="sigma"/>: linear interpolation of log sigma between the two training
    /// timesteps that bracket it (diffusers' _sigma_to_t), clamped to [0, T - 1].
    /// </summary>
    /// <param name="sigma">A noise level &gt; 0.</param>
    /// <param name="trainingSigmas">sigma_t for t = 0 .. T - 1 (<see cref="TrainingSigmas"/>), increasing; T &gt;= 2.</param>
    public static double SigmaToT(double sigma, IReadOnlyList<double> trainingSigmas)
    {
        double logSigma = Math.Log(sigma);
        int last = trainingSigmas.Count - 1;
        // low: the last index whose log sigma is <= log(sigma) (0 if none), at most T - 2.
        int low = 0;
        for (int i = 0; i <= last; i++)
        {
            if (Math.Log(trainingSigmas[i]) <= logSigma) low = i;
        }

        low = Math.Min(low, last - 1);
        double lo = Math.Log(trainingSigmas[low]), hi = Math.Log(trainingSigmas[low + 1]);
        double w = Math.Clamp((lo - logSigma) / (lo - hi), 0.0, 1.0);
        return (1.0 - w) * low + w * (low + 1);
    }

    /// <summary>sigma at a continuous timestep by linear interpolation of the training sigmas (numpy's interp, as diffusers' Euler
    /// schedulers without Karras sigmas do).</summary>
    public static double SigmaAtLinear(double t, IReadOnlyList<double> trainingSigmas)
    {
        int last = trainingSigmas.Count - 1;
        if (t <= 0) return trainingSigmas[0];
        if (t >= last) return trainingSigmas[last];
        int low = (int)Math.Floor(t);
        double f = t - low;
        return trainingSigmas[low] + f * (trainingSigmas[low + 1] - trainingSigmas[low]);
    }

    /// <summary>sigma at a continuous timestep by linear interpolation of log sigma: the inverse of <see cref="SigmaToT"/>.</summary>
    public static double SigmaAtLog(double t, IReadOnlyList<double> trainingSigmas)
    {
        int last = trainingSigmas.Count - 1;
        if (t <= 0) return trainingSigmas[0];
        if (t >= last) return trainingSigmas[last];
        int low = (int)Math.Floor(t);
        double f = t - low;
        return Math.Exp((1.0 - f) * Math.Log(trainingSigmas[low]) + f * Math.Log(trainingSigmas[low + 1]));
    }
}
