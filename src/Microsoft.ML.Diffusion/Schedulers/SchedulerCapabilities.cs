namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// What a sampler can take part in beyond plain generation; read from its registry row before a scheduler exists (option
/// validation, messages) and from <see cref="IDiffusionScheduler.Capabilities"/> by the loops that receive one.
/// </summary>
[Flags]
internal enum SchedulerCapabilities
{
    /// <summary>Plain generation only.</summary>
    None = 0,

    /// <summary>
    /// RePaint (Lugmayr et al. 2022) can drive it: a single-step sampler on integer timesteps whose <see cref="IDiffusionScheduler.Step"/>
    /// can be called for any visited timestep in any order (RePaint jumps back up and denoises again), with unscaled VP inputs.
    /// </summary>
    RePaint = 1,

    /// <summary>
    /// Classifier guidance (Dhariwal &amp; Nichol 2021) can steer it: the network sees the VP sample x_t at an integer timestep, so the
    /// noisy classifier's gradient and eps - s sqrt(1 - alpha_bar_t) g (or DDPM's mean shift) apply.
    /// </summary>
    ClassifierGuidance = 2,

    /// <summary>
    /// A multistep solver on VP noise levels (DPM-Solver++, its SDE variant, UniPC) that takes diffusers' use_karras_sigmas,
    /// use_lu_lambdas, final_sigmas_type and lower_order_final (<see cref="MultistepSettings"/>).
    /// </summary>
    MultistepOptions = 4,
}
