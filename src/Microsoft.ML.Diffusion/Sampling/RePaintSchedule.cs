namespace Microsoft.ML.Diffusion.Sampling;

/// <summary>
/// RePaint's time schedule with jumps (Lugmayr et al. 2022, section 4.2 and appendix, "get_schedule_jump"; the same
/// list as diffusers' RePaintScheduler.set_timesteps). Entries are indices k into the <c>steps</c> sampling timesteps
/// (k = steps - 1 is the noisiest, 0 lands on x_0). Reading the list in order, an entry below the one before it is a
/// denoising step from level k (one network call); an entry above it is an undo step back up to the previous entry's
/// level (eq. 9, no network call). Every <c>jumpLength</c> levels (at k = 0, L, 2L, ... below steps - L) the loop
/// jumps back up L levels, <c>resamplings</c> - 1 times, so those L levels are denoised <c>resamplings</c> times.
/// </summary>
internal static class RePaintSchedule
{
    /// <summary>The schedule: step indices in visiting order, starting at <paramref name="steps"/> - 1 and ending at 0.</summary>
    /// <param name="steps">Number of sampling timesteps (RePaint: 250).</param>
    /// <param name="jumpLength">Levels jumped back at each resampling, j in the paper (RePaint: 10).</param>
    /// <param name="resamplings">Times each stretch of <paramref name="jumpLength"/> levels is denoised, r in the paper (RePaint: 10); 1 is plain sampling.</param>
    public static int[] Jump(int steps, int jumpLength, int resamplings)
    {
        Check(steps, jumpLength, resamplings);
        var jumps = new Dictionary<int, int>();
        for (int j = 0; j < steps - jumpLength; j += jumpLength) jumps[j] = resamplings - 1;
        var list = new List<int>();
        int t = steps;
        while (t >= 1)
        {
            t--;
            list.Add(t);
            if (jumps.TryGetValue(t, out int left) && left > 0)
            {
                jumps[t] = left - 1;
                for (int i = 0; i < jumpLength; i++)
                {
                    t++;
                    list.Add(t);
                }
            }
        }

        return list.ToArray();
    }

    /// <summary>
    /// Network calls of <see cref="Jump"/>: steps + (resamplings - 1) * jumpLength * ceil((steps - jumpLength) / jumpLength),
    /// the second term counting the jump points 0, L, 2L, ... below steps - L (none when steps &lt;= jumpLength).
    /// </summary>
    public static int NetworkCalls(int steps, int jumpLength, int resamplings)
    {
        Check(steps, jumpLength, resamplings);
        int jumpPoints = steps > jumpLength ? (steps - jumpLength + jumpLength - 1) / jumpLength : 0;
        return steps + (resamplings - 1) * jumpLength * jumpPoints;
    }

    private static void Check(int steps, int jumpLength, int resamplings)
    {
        if (steps < 1) throw new ArgumentOutOfRangeException(nameof(steps), steps, "RePaint needs at least 1 step.");
        if (jumpLength < 1) throw new ArgumentOutOfRangeException(nameof(jumpLength), jumpLength, "JumpLength must be >= 1.");
        if (resamplings < 1) throw new ArgumentOutOfRangeException(nameof(resamplings), resamplings, "Resamplings must be >= 1 (1 = no resampling).");
    }
}
