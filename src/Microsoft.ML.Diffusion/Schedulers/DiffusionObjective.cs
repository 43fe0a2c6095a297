namespace Microsoft.ML.Diffusion;

/// <summary>What a diffusion model is trained to do (<see cref="DiffusionTrainer.Options.Objective"/>); saved with the model, and each
/// sampler belongs to one objective.</summary>
public enum DiffusionObjective
{
    /// <summary>
    /// Denoising diffusion (Ho et al. 2020, DDPM): x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps at integer timesteps of the
    /// beta schedule, the network predicting eps, x_0 or v (<see cref="DiffusionTrainer.Options.Prediction"/>). Sampled by DDPM, DDIM,
    /// DPM-Solver++, UniPC, and the Euler and Heun samplers on Karras sigmas. The default, and what models saved before objectives
    /// existed were trained with.
    /// </summary>
    Ddpm,

    /// <summary>
    /// Flow matching with the rectified-flow path (Lipman et al. 2023, "Flow Matching for Generative Modeling"; Liu et al. 2023, "Flow
    /// Straight and Fast"; the objective of Stable Diffusion 3): x_t = (1 - t) x_0 + t eps with t ~ Uniform[0, 1], the network (given
    /// the time t * T as a float) predicts the velocity v = eps - x_0, and the loss is the MSE to it. Sampled by
    /// <see cref="SamplerKind.FlowMatchEuler"/> and <see cref="SamplerKind.FlowMatchHeun"/>, which integrate dx/dt = v from t = 1 (pure
    /// noise) to t = 0 (diffusers' FlowMatchEulerDiscreteScheduler and FlowMatchHeunDiscreteScheduler, shift 1).
    /// </summary>
    FlowMatching,
}
