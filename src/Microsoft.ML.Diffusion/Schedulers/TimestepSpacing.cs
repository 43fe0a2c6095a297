namespace Microsoft.ML.Diffusion;

/// <summary>
/// How a scheduler picks S sampling timesteps out of the T training timesteps (Lin et al. 2024, "Common Diffusion
/// Noise Schedules and Sample Steps are Flawed", table 2; diffusers' <c>timestep_spacing</c>). The lists are
/// visited in descending order; each step moves to the next element of the list, and the last one to x_0.
/// Rounding is half-to-even, as numpy's. Examples are for T = 1000, S = 10.
/// </summary>
public enum TimestepSpacing
{
    /// <summary>
    /// t_i = i * floor(T / S) for i = S - 1 .. 0 (steps_offset 0): 900, 800, ..., 0. DDPM's and DDIM's default.
    /// Never visits the noisiest timesteps above (S - 1) * floor(T / S).
    /// </summary>
    Leading,

    /// <summary>
    /// t_i = round(T - i * T / S) - 1 for i = 0 .. S - 1: 999, 899, ..., 99. Starts at the noisiest timestep T - 1;
    /// the choice Lin et al. recommend.
    /// </summary>
    Trailing,

    /// <summary>
    /// round(linspace(0, T - 1, S)) reversed: 999, 888, ..., 111, 0. Visits both ends.
    /// </summary>
    Linspace,
}
