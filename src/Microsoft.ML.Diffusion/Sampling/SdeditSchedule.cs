using System.Globalization;

namespace Microsoft.ML.Diffusion.Sampling;

/// <summary>
/// Where SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential Equations", section 3)
/// enters the sampling loop for a strength s in [0, 1]: the input image is noised to the noise level of the loop's start and then
/// denoised by the last steps only. The step count follows diffusers' <c>StableDiffusionImg2ImgPipeline.get_timesteps</c>:
/// init_timestep = min(int(N s), N), t_start = max(N - init_timestep, 0), and the loop runs from loop position t_start * order.
/// </summary>
internal static class SdeditSchedule
{
    /// <summary>diffusers' t_start: the solver steps skipped at the start of an N-step loop, max(N - min(int(N s), N), 0).</summary>
    /// <param name="steps">N, the loop's solver steps (&gt;= 1).</param>
    /// <param name="strength">s in [0, 1] (read as the decimal number it prints as, see <see cref="AsDouble"/>).</param>
    public static int StartStep(int steps, float strength)
    {
        CheckStrength(strength, nameof(strength));
        if (steps < 1) throw new ArgumentOutOfRangeException(nameof(steps), steps, "The number of steps must be >= 1.");
        // Python's int() truncates towards zero; N s >= 0 here.
        int initTimestep = Math.Min((int)Math.Truncate(steps * AsDouble(strength)), steps);
        return Math.Max(steps - initTimestep, 0);
    }

    /// <summary>The solver steps SDEdit runs: N - t_start = min(int(N s), N) (0 for a strength below 1/N: the input comes back).</summary>
    public static int DenoisingSteps(int steps, float strength) => steps - StartStep(steps, strength);

    /// <summary>The loop position the denoising starts at: t_start * order (diffusers' <c>timesteps[t_start * scheduler.order:]</c>),
    /// at most <paramref name="loopLength"/> (no step left: a Heun loop of N steps has 2N - 1 positions).</summary>
    /// <param name="startStep">t_start (<see cref="StartStep"/>).</param>
    /// <param name="order">The scheduler's order (2 for Heun).</param>
    /// <param name="loopLength">The scheduler's number of loop positions (Timesteps.Count).</param>
    public static int StartIndex(int startStep, int order, int loopLength) => Math.Min(startStep * order, loopLength);

    /// <summary>
    /// <paramref name="strength"/> as the double of its shortest decimal form (0.7f becomes 0.7, not 0.699999988...), so that
    /// int(N s) equals Python's for the number a user types: 10 * 0.7 gives 7 steps there, and would give 6 from the float's exact value.
    /// </summary>
    public static double AsDouble(float strength) =>
        double.Parse(strength.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> unless 0 &lt;= <paramref name="strength"/> &lt;= 1 (NaN included).</summary>
    /// <param name="strength">The strength.</param>
    /// <param name="name">The setting named in the message, e.g. "ImageToImageOptions.Strength".</param>
    public static void CheckStrength(float strength, string name)
    {
        if (!(strength >= 0f && strength <= 1f))
            throw new ArgumentOutOfRangeException(name, strength,
                $"{name} is {strength.ToString(CultureInfo.InvariantCulture)}; expected a number in [0, 1] (0 returns the input image, 1 generates " +
                "from pure noise; diffusers' default is 0.8).");
    }
}
