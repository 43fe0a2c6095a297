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

    /// <summary>
    /// Euler's method on Karras sigmas (Karras et al. 2022, "EDM", Algorithm 2 without churn; diffusers' EulerDiscreteScheduler with
    /// use_karras_sigmas): deterministic first-order ODE solver in sigma space; 25 steps by default. No RePaint or classifier guidance.
    /// </summary>
    EulerKarras,

    /// <summary>
    /// Heun's second-order method on Karras sigmas (EDM Algorithm 1): deterministic; n steps take 2n - 1 network calls (18 steps,
    /// 35 calls, by default), more accurate per step than Euler. Needs about 10 steps or more: its last correction divides by the
    /// smallest sigma, which magnifies the predictor's error (about 300-fold with 3 steps), so very few steps give noise, as in
    /// diffusers. No RePaint or classifier guidance.
    /// </summary>
    HeunKarras,

    /// <summary>
    /// Euler ancestral (diffusers' EulerAncestralDiscreteScheduler): an Euler step plus fresh noise at every step; stochastic, varied
    /// samples in 20-50 steps (30 by default). No RePaint or classifier guidance.
    /// </summary>
    EulerAncestral,

    /// <summary>
    /// DPM-Solver++(2M) on Karras sigmas ("DPM++ 2M Karras"; diffusers' DPMSolverMultistepScheduler with use_karras_sigmas): the
    /// solver of <see cref="DpmSolverPlusPlus"/> at the noise levels of Karras et al. 2022, eq. 5, which spend more steps at low noise;
    /// 20 steps by default. No RePaint or classifier guidance.
    /// </summary>
    DpmSolverPlusPlusKarras,

    /// <summary>
    /// SDE-DPM-Solver++(2M) (Lu et al. 2022; diffusers' algorithm_type "sde-dpmsolver++"): the second-order multistep solver of the
    /// reverse SDE, which adds fresh noise at every step; stochastic, varied samples in 20-50 steps (25 by default). Trailing spacing.
    /// </summary>
    DpmSolverPlusPlusSde,

    /// <summary>
    /// UniPC (Zhao et al. 2023; diffusers' UniPCMultistepScheduler, order 2, bh2): a predictor-corrector multistep ODE solver whose
    /// corrector reuses each network output; deterministic, good samples in 5-10 steps (10 by default). Trailing spacing.
    /// </summary>
    UniPC,

    /// <summary>
    /// Euler's method on the rectified-flow ODE, for models trained with <see cref="DiffusionObjective.FlowMatching"/> (diffusers'
    /// FlowMatchEulerDiscreteScheduler, shift 1; the sampler of Stable Diffusion 3): x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v over
    /// sigma = linspace(1, 1/T, n), then 0. Deterministic; 28 steps by default. Spacing, clipping and thresholding do not apply; no RePaint
    /// or classifier guidance.
    /// </summary>
    FlowMatchEuler,

    /// <summary>
    /// Heun's second-order method on the rectified-flow ODE, for models trained with <see cref="DiffusionObjective.FlowMatching"/>
    /// (diffusers' FlowMatchHeunDiscreteScheduler, shift 1): n steps take 2n - 1 network calls (14 steps, 27 calls, by default).
    /// Deterministic. Spacing, clipping and thresholding do not apply; no RePaint or classifier guidance.
    /// </summary>
    FlowMatchHeun,
}
