using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// A reverse-process sampler with diffusers' contract: <see cref="SetTimesteps"/> chooses the timesteps to visit,
/// <see cref="Step"/> moves a sample from one of them to the next, and <see cref="AddNoise"/> samples the forward
/// process q(x_t | x_0). DDPM and DDIM hold no tensors and only read their <see cref="Schedule"/>; a multistep solver
/// (<see cref="DpmSolverMultistepScheduler"/>) keeps its previous x_0 prediction between steps, so one instance serves
/// one sampling loop at a time (<see cref="SetTimesteps"/> resets it, and so does starting again at the first timestep).
/// </summary>
/// <remarks>
/// A sampling loop is: <c>SetTimesteps(n)</c>; x = noise; for each t in <see cref="Timesteps"/>:
/// x = Step(model(x, t), t, x, NeedsNoise ? randn_like(x) : null).
/// </remarks>
internal interface IDiffusionScheduler
{
    /// <summary>The forward-process schedule (betas, alpha_bar) the model was trained with.</summary>
    DiffusionSchedule Schedule { get; }

    /// <summary>The timesteps a sampling loop visits, in descending order; set by <see cref="SetTimesteps"/> (all T - 1 .. 0 until then).</summary>
    IReadOnlyList<int> Timesteps { get; }

    /// <summary>Chooses <paramref name="steps"/> timesteps out of the schedule's T with the scheduler's <see cref="TimestepSpacing"/>
    /// (leading, i * (T / steps) for i = steps - 1 .. 0, for DDPM and DDIM by default) and resets any state kept between steps.</summary>
    /// <param name="steps">Number of sampling steps, from 1 to T.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="steps"/> is below 1 or above T.</exception>
    void SetTimesteps(int steps);

    /// <summary>True if <see cref="Step"/> uses fresh Gaussian noise (DDPM; DDIM with eta &gt; 0).</summary>
    bool NeedsNoise { get; }

    /// <summary>
    /// One reverse step from <paramref name="timestep"/> (an element of <see cref="Timesteps"/>) to the next one in
    /// <see cref="Timesteps"/>, or to x_0 after the last. Returns x_prev with the dtype and device of <paramref name="sample"/>.
    /// </summary>
    /// <param name="modelOutput">The model's prediction, shaped like <paramref name="sample"/>: epsilon by default, or x_0 or v
    /// when the scheduler was created with another <see cref="PredictionType"/>.</param>
    /// <param name="timestep">The current timestep t, in [0, T).</param>
    /// <param name="sample">The current sample x_t.</param>
    /// <param name="noise">Standard normal noise shaped like <paramref name="sample"/>: required when <see cref="NeedsNoise"/>
    /// (the step that lands on x_0 adds none and accepts null), ignored otherwise.</param>
    Tensor Step(Tensor modelOutput, int timestep, Tensor sample, Tensor? noise = null);

    /// <summary>Samples q(x_t | x_0) (DDPM eq. 4) for a [B] int64 tensor of timesteps; see <see cref="DiffusionSchedule.AddNoise"/>.</summary>
    /// <param name="x0">Clean samples, [B, ...].</param>
    /// <param name="noise">Standard normal noise shaped like <paramref name="x0"/>.</param>
    /// <param name="timesteps">A [B] int64 tensor of timesteps in [0, T).</param>
    Tensor AddNoise(Tensor x0, Tensor noise, Tensor timesteps);

    /// <summary>
    /// The timestep that <see cref="Step"/> moves <paramref name="timestep"/> to: the next element of <see cref="Timesteps"/>,
    /// or -1 (x_0) after the last. For a timestep not in the list, the largest listed timestep below it (or -1).
    /// </summary>
    /// <param name="timestep">A timestep in [0, T).</param>
    int PreviousTimestep(int timestep);
}
