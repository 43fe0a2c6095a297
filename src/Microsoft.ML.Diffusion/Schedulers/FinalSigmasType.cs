namespace Microsoft.ML.Diffusion;

/// <summary>
/// Where the last step of a multistep solver (DPM-Solver++, its SDE variant, UniPC) lands: diffusers' <c>final_sigmas_type</c>.
/// </summary>
public enum FinalSigmasType
{
    /// <summary>"zero" (diffusers' default): on sigma = 0, i.e. on the data prediction x_0 itself; the last step is then first order.</summary>
    Zero,

    /// <summary>"sigma_min": on the noise level of the schedule's first timestep (alpha_bar_0), as older diffusers releases did.</summary>
    SigmaMin,
}
