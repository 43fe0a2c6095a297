namespace Microsoft.ML.Diffusion;

/// <summary>The reverse-process sampler used to generate images.</summary>
public enum SamplerKind
{
    /// <summary>DDPM ancestral sampling (Ho et al. 2020, algorithm 2); one network call per timestep.</summary>
    Ddpm,

    /// <summary>DDIM (Song et al. 2021); deterministic with <see cref="SamplerOptions.Eta"/> = 0, any number of steps.</summary>
    Ddim,

    /// <summary>
    /// DPM-Solver++(2M) (Lu et al. 2022, algorithm 2): deterministic second-order multistep ODE solver; good images in
    /// 10-25 steps. Trailing timestep spacing by default.
    /// </summary>
    DpmSolverPlusPlus,
}
