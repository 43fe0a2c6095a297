namespace Microsoft.ML.Diffusion.Schedules;

/// <summary>
/// Beta schedules as short pure functions in float64 (lucidrains/denoising-diffusion-pytorch style).
/// Each returns a new array of <c>timesteps</c> betas, beta_1 .. beta_T stored at indices 0 .. T-1.
/// </summary>
internal static class BetaSchedules
{
    /// <summary>
    /// Linear schedule (Ho et al. 2020, DDPM, section 4): betas evenly spaced from <paramref name="betaStart"/>
    /// to <paramref name="betaEnd"/>, both ends included.
    /// </summary>
    /// <remarks>
    /// The end points are used as given for every <paramref name="timesteps"/>: unlike lucidrains'
    /// <c>linear_beta_schedule</c>, which multiplies both by 1000/T, there is no rescaling for T != 1000.
    /// With T = 1 the single beta is <paramref name="betaStart"/> (numpy's linspace convention).
    /// </remarks>
    /// <param name="timesteps">Number of diffusion steps T (at least 1).</param>
    /// <param name="betaStart">beta_1, in (0, 1).</param>
    /// <param name="betaEnd">beta_T, in (0, 1).</param>
    public static double[] Linear(int timesteps, double betaStart = 1e-4, double betaEnd = 0.02)
    {
        CheckTimesteps(timesteps);
        CheckOpenUnit(betaStart, nameof(betaStart));
        CheckOpenUnit(betaEnd, nameof(betaEnd));
        return Linspace(betaStart, betaEnd, timesteps);
    }

    /// <summary>
    /// Cosine schedule (Nichol and Dhariwal 2021, Improved DDPM, eq. 17):
    /// alpha_bar(t) = f(t)/f(0), f(t) = cos^2(((t/T) + s)/(1 + s) * pi/2),
    /// beta_t = min(1 - alpha_bar(t)/alpha_bar(t-1), <paramref name="maxBeta"/>).
    /// </summary>
    /// <param name="timesteps">Number of diffusion steps T (at least 1).</param>
    /// <param name="s">Small offset that keeps beta_1 from being too small near t = 0 (paper: 0.008); at least 0.</param>
    /// <param name="maxBeta">Upper clip for the betas, in (0, 1) (paper: 0.999, to avoid singularities near t = T).</param>
    public static double[] Cosine(int timesteps, double s = 0.008, double maxBeta = 0.999)
    {
        CheckTimesteps(timesteps);
        if (!(s >= 0) || double.IsInfinity(s))
        {
            throw new ArgumentOutOfRangeException(nameof(s), s, $"The cosine schedule offset s must be a finite number >= 0; got {s}.");
        }

        CheckOpenUnit(maxBeta, nameof(maxBeta));

        // Improved DDPM eq. 17: f(t) = cos^2(((t/T) + s)/(1 + s) * pi/2).
        double F(int t) => Math.Pow(Math.Cos(((double)t / timesteps + s) / (1 + s) * Math.PI / 2), 2);

        double f0 = F(0);
        var betas = new double[timesteps];
        double alphaBarPrev = 1.0; // alpha_bar(0) = f(0)/f(0)
        for (int t = 1; t <= timesteps; t++)
        {
            double alphaBar = F(t) / f0;
            // beta_t = 1 - alpha_bar(t)/alpha_bar(t-1), clipped to maxBeta (Improved DDPM, below eq. 17).
            betas[t - 1] = Math.Clamp(1 - alphaBar / alphaBarPrev, 0, maxBeta);
            alphaBarPrev = alphaBar;
        }

        return betas;
    }

    /// <summary>
    /// Scaled-linear schedule (Stable Diffusion, Rombach et al. 2022; diffusers' "scaled_linear"):
    /// the square roots of the betas are evenly spaced from sqrt(<paramref name="betaStart"/>) to
    /// sqrt(<paramref name="betaEnd"/>), and then squared.
    /// </summary>
    /// <param name="timesteps">Number of diffusion steps T (at least 1).</param>
    /// <param name="betaStart">beta_1, in (0, 1).</param>
    /// <param name="betaEnd">beta_T, in (0, 1).</param>
    public static double[] ScaledLinear(int timesteps, double betaStart = 0.00085, double betaEnd = 0.012)
    {
        CheckTimesteps(timesteps);
        CheckOpenUnit(betaStart, nameof(betaStart));
        CheckOpenUnit(betaEnd, nameof(betaEnd));
        var betas = Linspace(Math.Sqrt(betaStart), Math.Sqrt(betaEnd), timesteps);
        for (int i = 0; i < betas.Length; i++)
        {
            betas[i] *= betas[i];
        }

        return betas;
    }

    /// <summary>
    /// Sigmoid schedule (Jabri et al. 2022, "Scalable Adaptive Computation for Iterative Generation", as in
    /// lucidrains' <c>sigmoid_beta_schedule</c>): with v(x) = sigmoid(x/tau),
    /// alpha_bar(t) = (v(end) - v((t/T)(end - start) + start)) / (v(end) - v(start)), normalised by alpha_bar(0),
    /// beta_t = min(1 - alpha_bar(t)/alpha_bar(t-1), <paramref name="maxBeta"/>).
    /// </summary>
    /// <param name="timesteps">Number of diffusion steps T (at least 1).</param>
    /// <param name="start">Left end of the sigmoid's input range (lucidrains: -3); less than <paramref name="end"/>.</param>
    /// <param name="end">Right end of the sigmoid's input range (lucidrains: 3).</param>
    /// <param name="tau">Temperature, greater than 0 (lucidrains: 1); larger values give a more linear alpha_bar.</param>
    /// <param name="maxBeta">Upper clip for the betas, in (0, 1).</param>
    public static double[] Sigmoid(int timesteps, double start = -3, double end = 3, double tau = 1, double maxBeta = 0.999)
    {
        CheckTimesteps(timesteps);
        if (!double.IsFinite(start))
        {
            throw new ArgumentOutOfRangeException(nameof(start), start, $"The sigmoid schedule start must be finite; got {start}.");
        }

        if (!double.IsFinite(end) || !(end > start))
        {
            throw new ArgumentOutOfRangeException(nameof(end), end, $"The sigmoid schedule end must be finite and greater than start ({start}); got {end}.");
        }

        if (!(tau > 0) || double.IsInfinity(tau))
        {
            throw new ArgumentOutOfRangeException(nameof(tau), tau, $"The sigmoid schedule temperature tau must be a finite number > 0; got {tau}.");
        }

        CheckOpenUnit(maxBeta, nameof(maxBeta));

        static double Sig(double x) => 1 / (1 + Math.Exp(-x));
        double vStart = Sig(start / tau);
        double vEnd = Sig(end / tau);

        // lucidrains sigmoid_beta_schedule: alpha_bar(t) = (-sigmoid(((t/T)(end - start) + start)/tau) + v_end)/(v_end - v_start).
        double AlphaBarRaw(int t) => (vEnd - Sig(((double)t / timesteps * (end - start) + start) / tau)) / (vEnd - vStart);

        double a0 = AlphaBarRaw(0);
        var betas = new double[timesteps];
        double alphaBarPrev = 1.0;
        for (int t = 1; t <= timesteps; t++)
        {
            double alphaBar = AlphaBarRaw(t) / a0;
            // beta_t = 1 - alpha_bar(t)/alpha_bar(t-1), clipped to [0, maxBeta].
            betas[t - 1] = Math.Clamp(1 - alphaBar / alphaBarPrev, 0, maxBeta);
            alphaBarPrev = alphaBar;
        }

        return betas;
    }

    /// <summary>
    /// Zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1; diffusers'
    /// <c>rescale_zero_terminal_snr</c>): sqrt(alpha_bar) is shifted so that its last value is 0 and scaled so that its first value is
    /// unchanged, then the betas are recomputed from the new alpha_bar. Returns a new array whose last beta is exactly 1
    /// (alpha_bar_T = 0: x_T is pure noise, SNR(T) = 0).
    /// </summary>
    /// <param name="betas">beta_1 .. beta_T, T &gt;= 2 (with one timestep the first and last alpha_bar coincide).</param>
    public static double[] RescaleZeroTerminalSnr(double[] betas)
    {
        ArgumentNullException.ThrowIfNull(betas);
        if (betas.Length < 2)
            throw new ArgumentOutOfRangeException(nameof(betas), betas.Length,
                $"Zero-terminal-SNR rescaling needs at least 2 timesteps (it keeps the first alpha_bar and zeroes the last); got {betas.Length}.");
        int n = betas.Length;
        // Algorithm 1, lines 2-4: alphas = 1 - betas, alphas_bar = cumprod(alphas), alphas_bar_sqrt = sqrt(alphas_bar).
        var sqrtAlphaBar = new double[n];
        double alphaBar = 1.0;
        for (int t = 0; t < n; t++)
        {
            alphaBar *= 1.0 - betas[t];
            sqrtAlphaBar[t] = Math.Sqrt(alphaBar);
        }

        // Lines 6-7: store old values (first and last).
        double first = sqrtAlphaBar[0], last = sqrtAlphaBar[n - 1];
        if (!(first > last))
            throw new ArgumentException($"Zero-terminal-SNR rescaling needs a decreasing alpha_bar; the first sqrt(alpha_bar) is {first} and the last {last}.", nameof(betas));
        // Lines 9-12: shift so the last timestep is zero, scale so the first timestep is back to its old value.
        var rescaled = new double[n];
        for (int t = 0; t < n; t++)
        {
            double s = (sqrtAlphaBar[t] - last) * (first / (first - last));
            rescaled[t] = s * s;                                        // line 14: alphas_bar = alphas_bar_sqrt ** 2
        }

        // Lines 15-17: alphas = alphas_bar[1:] / alphas_bar[:-1], with alphas_bar[0] first; betas = 1 - alphas.
        var result = new double[n];
        result[0] = 1.0 - rescaled[0];
        for (int t = 1; t < n; t++)
        {
            result[t] = 1.0 - rescaled[t] / rescaled[t - 1];
        }

        return result;
    }

    /// <summary>Returns the betas of <paramref name="schedule"/> over <paramref name="timesteps"/> steps, with each schedule's default parameters.</summary>
    /// <param name="schedule">The schedule kind.</param>
    /// <param name="timesteps">Number of diffusion steps T (at least 1).</param>
    public static double[] Create(NoiseSchedule schedule, int timesteps) => schedule switch
    {
        NoiseSchedule.Linear => Linear(timesteps),
        NoiseSchedule.Cosine => Cosine(timesteps),
        NoiseSchedule.ScaledLinear => ScaledLinear(timesteps),
        NoiseSchedule.Sigmoid => Sigmoid(timesteps),
        _ => throw new ArgumentOutOfRangeException(nameof(schedule), schedule,
            $"Unknown noise schedule {schedule}; expected one of {string.Join(", ", Enum.GetNames<NoiseSchedule>())}."),
    };

    /// <summary>numpy.linspace(start, end, n): n evenly spaced values, both ends included (the last is exactly <paramref name="end"/>).</summary>
    private static double[] Linspace(double start, double end, int n)
    {
        var values = new double[n];
        if (n == 1)
        {
            values[0] = start;
            return values;
        }

        double step = (end - start) / (n - 1);
        for (int i = 0; i < n; i++)
        {
            values[i] = start + i * step;
        }

        values[n - 1] = end;
        return values;
    }

    internal static void CheckTimesteps(int timesteps)
    {
        if (timesteps < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(timesteps), timesteps, $"The number of diffusion timesteps must be at least 1; got {timesteps}.");
        }
    }

    private static void CheckOpenUnit(double value, string name)
    {
        if (!(value > 0 && value < 1))
        {
            throw new ArgumentOutOfRangeException(name, value, $"{name} must lie strictly between 0 and 1; got {value}.");
        }
    }
}
