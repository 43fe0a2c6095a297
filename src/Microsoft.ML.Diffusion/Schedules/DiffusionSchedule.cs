using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedules;

/// <summary>
/// The fixed quantities of a forward diffusion process derived from its betas, in float64
/// (Ho et al. 2020, DDPM, eq. 2, 4, 6, 7). Index t (0-based) holds the value for diffusion step t + 1 of the
/// paper, as in diffusers and lucidrains: t = 0 is the least noisy step and t = T - 1 the noisiest.
/// </summary>
/// <remarks>
/// The arrays are computed once in the constructor; the properties return them directly, so callers must not
/// modify them. Only <see cref="Extract"/> (float32) and <see cref="AddNoise"/> (in x0's dtype) make tensors, from the float64 values.
/// </remarks>
internal sealed class DiffusionSchedule
{
    /// <summary>Creates the schedule of kind <paramref name="kind"/> over <paramref name="timesteps"/> steps (<see cref="BetaSchedules.Create"/>).</summary>
    /// <param name="kind">The beta schedule.</param>
    /// <param name="timesteps">Number of diffusion steps T (at least 1).</param>
    public DiffusionSchedule(NoiseSchedule kind, int timesteps)
        : this(CheckBetas(BetaSchedules.Create(kind, timesteps)), kind, isCustom: false)
    {
    }

    /// <summary>
    /// Creates the schedule of kind <paramref name="kind"/> over <paramref name="timesteps"/> steps, rescaled to zero terminal SNR
    /// when <paramref name="rescaleZeroTerminalSnr"/> (<see cref="BetaSchedules.RescaleZeroTerminalSnr"/>: alpha_bar_{T-1} = 0, the last
    /// beta 1; diffusers' <c>rescale_betas_zero_snr</c>).
    /// </summary>
    /// <param name="kind">The beta schedule.</param>
    /// <param name="timesteps">Number of diffusion steps T (at least 2 when rescaled).</param>
    /// <param name="rescaleZeroTerminalSnr">Apply Lin et al. 2024, Algorithm 1.</param>
    public DiffusionSchedule(NoiseSchedule kind, int timesteps, bool rescaleZeroTerminalSnr)
        : this(rescaleZeroTerminalSnr
                ? CheckBetas(BetaSchedules.RescaleZeroTerminalSnr(CheckBetas(BetaSchedules.Create(kind, timesteps))), lastMayBeOne: true)
                : CheckBetas(BetaSchedules.Create(kind, timesteps)),
            kind, isCustom: false)
    {
        ZeroTerminalSnr = rescaleZeroTerminalSnr;
    }

    /// <summary>
    /// Creates a schedule from explicit betas (copied). <see cref="Kind"/> is then <see cref="NoiseSchedule.Linear"/>
    /// only as a placeholder and <see cref="IsCustom"/> is true: code that persists a schedule must store
    /// <see cref="Betas"/> when <see cref="IsCustom"/> is set.
    /// </summary>
    /// <param name="betas">beta_1 .. beta_T, each strictly between 0 and 1.</param>
    public DiffusionSchedule(double[] betas)
        : this(CheckBetas(betas), NoiseSchedule.Linear, isCustom: true)
    {
    }

    private DiffusionSchedule(double[] betas, NoiseSchedule kind, bool isCustom)
    {
        Kind = kind;
        IsCustom = isCustom;
        Timesteps = betas.Length;
        int n = betas.Length;
        Betas = betas;
        Alphas = new double[n];
        AlphaBars = new double[n];
        AlphaBarsPrev = new double[n];
        PosteriorVariance = new double[n];
        PosteriorLogVarianceClipped = new double[n];
        PosteriorMeanCoef1 = new double[n];
        PosteriorMeanCoef2 = new double[n];

        double alphaBar = 1.0;
        for (int t = 0; t < n; t++)
        {
            // DDPM eq. 4 notation: alpha_t = 1 - beta_t, alpha_bar_t = prod_{s<=t} alpha_s.
            Alphas[t] = 1.0 - betas[t];
            AlphaBarsPrev[t] = alphaBar;
            alphaBar *= Alphas[t];
            AlphaBars[t] = alphaBar;

            double oneMinusAbar = 1.0 - AlphaBars[t];
            double oneMinusAbarPrev = 1.0 - AlphaBarsPrev[t];

            // DDPM eq. 7: beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t (0 at t = 0).
            PosteriorVariance[t] = oneMinusAbarPrev / oneMinusAbar * betas[t];

            // DDPM eq. 7: mu_tilde_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0 + sqrt(alpha_t)(1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t.
            PosteriorMeanCoef1[t] = Math.Sqrt(AlphaBarsPrev[t]) * betas[t] / oneMinusAbar;
            PosteriorMeanCoef2[t] = Math.Sqrt(Alphas[t]) * oneMinusAbarPrev / oneMinusAbar;
        }

        // log(beta_tilde) with the t = 0 entry (log 0) replaced by the t = 1 entry, as openai/improved-diffusion does.
        for (int t = 0; t < n; t++)
        {
            double v = t == 0 && n > 1 ? PosteriorVariance[1] : PosteriorVariance[t];
            PosteriorLogVarianceClipped[t] = Math.Log(Math.Max(v, 1e-20));
        }
    }

    /// <summary>The beta schedule kind; <see cref="NoiseSchedule.Linear"/> as a placeholder when <see cref="IsCustom"/>.</summary>
    public NoiseSchedule Kind { get; }

    /// <summary>True when the schedule was built from explicit betas rather than from <see cref="Kind"/>.</summary>
    public bool IsCustom { get; }

    /// <summary>True when the betas were rescaled to zero terminal SNR (Lin et al. 2024): alpha_bar_{T-1} = 0, the last beta is 1.</summary>
    public bool ZeroTerminalSnr { get; }

    /// <summary>
    /// The alpha_bar that samplers working with log-SNR or sigma = sqrt((1 - alpha_bar)/alpha_bar) use for timestep t: alpha_bar_t,
    /// except that an alpha_bar of exactly 0 (the last timestep of a zero-terminal-SNR schedule) becomes 2^-24, as diffusers' Euler,
    /// Euler ancestral, DPM-Solver++ and UniPC schedulers set alphas_cumprod[-1] "so the first sigma is not inf" (sigma_max = 4096). Other tiny values (the cosine schedule's last, about 2e-9) are kept.
    /// </summary>
    /// <param name="t">The timestep, from -1 to T - 1.</param>
    public double SolverAlphaBar(int t) => AlphaBar(t) is var a && a == 0 ? MinSolverAlphaBar : a;

    /// <summary>2^-24: the smallest alpha_bar a sigma-space or log-SNR sampler sees (see <see cref="SolverAlphaBar"/>).</summary>
    public const double MinSolverAlphaBar = 5.9604644775390625E-08;

    /// <summary>Number of diffusion steps T.</summary>
    public int Timesteps { get; }

    /// <summary>beta_t, the variance of the noise added at step t (DDPM eq. 2).</summary>
    public double[] Betas { get; }

    /// <summary>alpha_t = 1 - beta_t.</summary>
    public double[] Alphas { get; }

    /// <summary>alpha_bar_t = prod_{s=0..t} alpha_s (DDPM eq. 4).</summary>
    public double[] AlphaBars { get; }

    /// <summary>alpha_bar_{t-1}, with 1 at t = 0.</summary>
    public double[] AlphaBarsPrev { get; }

    /// <summary>beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t, the variance of q(x_{t-1} | x_t, x_0) (DDPM eq. 7); 0 at t = 0.</summary>
    public double[] PosteriorVariance { get; }

    /// <summary>log(beta_tilde_t), with the t = 0 entry (log 0) replaced by the t = 1 entry (Improved DDPM code).</summary>
    public double[] PosteriorLogVarianceClipped { get; }

    /// <summary>Coefficient of x_0 in the posterior mean mu_tilde_t (DDPM eq. 7): sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t).</summary>
    public double[] PosteriorMeanCoef1 { get; }

    /// <summary>Coefficient of x_t in the posterior mean mu_tilde_t (DDPM eq. 7): sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t).</summary>
    public double[] PosteriorMeanCoef2 { get; }

    /// <summary>alpha_bar_t for 0 &lt;= t &lt; T, and 1.0 for t = -1 (the "final alpha" after the last reverse step).</summary>
    /// <param name="t">The timestep, from -1 to T - 1.</param>
    public double AlphaBar(int t)
    {
        if (t < -1 || t >= Timesteps)
        {
            throw new ArgumentOutOfRangeException(nameof(t), t, $"The timestep must lie between -1 and {Timesteps - 1} (T = {Timesteps}); got {t}.");
        }

        return t == -1 ? 1.0 : AlphaBars[t];
    }

    /// <summary>
    /// Gathers values[t_i] for a [B] int64 tensor <paramref name="t"/> and returns a float32 tensor shaped [B,1,1,1]
    /// (B followed by <paramref name="ndim"/> - 1 ones) on t's device, ready to broadcast against a batch.
    /// </summary>
    /// <param name="values">A per-timestep array, usually one of this schedule's (length T).</param>
    /// <param name="t">Timesteps, a 1-D integer tensor with values in [0, values.Length).</param>
    /// <param name="ndim">Rank of the tensor the result will broadcast against (at least 1).</param>
    /// <remarks>The range check of <paramref name="t"/> reads its minimum and maximum back to the host (one device sync).</remarks>
    public Tensor Extract(double[] values, Tensor t, int ndim = 4) => ExtractAs(values, t, ndim, ScalarType.Float32);

    /// <summary>As <see cref="Extract(double[], Tensor, int)"/>, with the result in <paramref name="dtype"/>.</summary>
    internal static Tensor ExtractAs(double[] values, Tensor t, int ndim, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(t);
        if (ndim < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(ndim), ndim, $"ndim must be at least 1; got {ndim}.");
        }

        if (t.dim() != 1 || !(t.dtype == ScalarType.Int64 || t.dtype == ScalarType.Int32))
        {
            throw new ArgumentException($"Timesteps must be a 1-D int64 tensor of shape [B]; got {t.dtype} with shape [{string.Join(", ", t.shape)}].", nameof(t));
        }

        using var scope = NewDisposeScope();
        var index = t.to_type(ScalarType.Int64);
        if (index.numel() > 0)
        {
            var (min, max) = (index.min().item<long>(), index.max().item<long>());
            if (min < 0 || max >= values.Length)
            {
                throw new ArgumentOutOfRangeException(nameof(t), $"Timesteps must lie in [0, {values.Length - 1}]; got values from {min} to {max}.");
            }
        }

        // Build the table in float64 and cast once, so the values are the float64 schedule rounded to dtype.
        var table = tensor(values, dtype: ScalarType.Float64, device: t.device).to_type(dtype);
        var shape = new long[ndim];
        shape[0] = t.shape[0];
        for (int i = 1; i < ndim; i++)
        {
            shape[i] = 1;
        }

        return table.index_select(0, index).reshape(shape).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Samples q(x_t | x_0) (DDPM eq. 4): sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise, per batch element.
    /// The result has x0's dtype and device.
    /// </summary>
    /// <param name="x0">Clean samples, [B, ...].</param>
    /// <param name="noise">Standard normal noise shaped like <paramref name="x0"/>.</param>
    /// <param name="t">Timesteps, a [B] int64 tensor with values in [0, T).</param>
    public Tensor AddNoise(Tensor x0, Tensor noise, Tensor t)
    {
        ArgumentNullException.ThrowIfNull(x0);
        ArgumentNullException.ThrowIfNull(noise);
        ArgumentNullException.ThrowIfNull(t);
        if (!x0.shape.SequenceEqual(noise.shape))
        {
            throw new ArgumentException($"noise must have the shape of x0 [{string.Join(", ", x0.shape)}]; got [{string.Join(", ", noise.shape)}].", nameof(noise));
        }

        if (x0.dim() < 1 || t.dim() != 1 || t.shape[0] != x0.shape[0])
        {
            throw new ArgumentException($"t must be a [B] tensor with B = x0's first dimension; got t of shape [{string.Join(", ", t.shape)}] for x0 of shape [{string.Join(", ", x0.shape)}].", nameof(t));
        }

        using var scope = NewDisposeScope();
        var tt = t.to(x0.device);
        var sqrtAbar = ExtractAs(SqrtAlphaBars, tt, (int)x0.dim(), x0.dtype);
        var sqrtOneMinusAbar = ExtractAs(SqrtOneMinusAlphaBars, tt, (int)x0.dim(), x0.dtype);

        // DDPM eq. 4: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.
        return (sqrtAbar * x0 + sqrtOneMinusAbar * noise).MoveToOuterDisposeScope();
    }

    private double[] SqrtAlphaBars => _sqrtAlphaBars ??= AlphaBars.Select(Math.Sqrt).ToArray();

    private double[] SqrtOneMinusAlphaBars => _sqrtOneMinusAlphaBars ??= AlphaBars.Select(a => Math.Sqrt(1.0 - a)).ToArray();

    private double[]? _sqrtAlphaBars;
    private double[]? _sqrtOneMinusAlphaBars;

    private static double[] CheckBetas(double[] betas) => CheckBetas(betas, lastMayBeOne: false);

    /// <summary>Checks that every beta lies in (0, 1), the last one in (0, 1] when <paramref name="lastMayBeOne"/> (zero terminal SNR).</summary>
    private static double[] CheckBetas(double[] betas, bool lastMayBeOne)
    {
        ArgumentNullException.ThrowIfNull(betas);
        if (betas.Length < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(betas), betas.Length, "At least one beta is needed; got an empty array.");
        }

        for (int i = 0; i < betas.Length; i++)
        {
            if (!(betas[i] > 0 && (betas[i] < 1 || (lastMayBeOne && i == betas.Length - 1 && betas[i] == 1))))
            {
                throw new ArgumentOutOfRangeException(nameof(betas), betas[i], $"Every beta must lie strictly between 0 and 1; betas[{i}] = {betas[i]}.");
            }
        }

        return (double[])betas.Clone();
    }
}
