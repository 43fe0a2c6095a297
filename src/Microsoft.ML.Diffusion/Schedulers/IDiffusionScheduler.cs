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
/// <para>A sampling loop (diffusers' SchedulerMixin contract) is: <c>SetTimesteps(n)</c>; x = <see cref="InitNoiseSigma"/> * noise;
/// for each loop position i of <see cref="Timesteps"/>: x = StepAt(i, model(ScaleModelInput(x, i), ModelTimestep(i)), x,
/// NeedsNoise ? randn_like(x) : null).PrevSample. The members with a body are the defaults of a sampler on the VP sample x_t at
/// integer timesteps (DDPM, DDIM, DPM-Solver++): no input scaling, unit initial noise, one network call per step.</para>
/// <para>Sigma-space samplers (Karras et al. 2022: x = x_0 + sigma eps) override them: their sample is the VP sample times
/// sqrt(sigma^2 + 1), the network sees x / sqrt(sigma^2 + 1) at a continuous timestep, and a Heun step takes two loop positions.
/// Their <see cref="Timesteps"/> are the network timesteps rounded (for progress reports) and may repeat, so they are stepped by
/// loop position only: <see cref="Capabilities"/> says what else (RePaint, classifier guidance) a sampler supports.</para>
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
    /// The loop's sample at loop position <paramref name="index"/> of <see cref="Timesteps"/> for clean samples <paramref name="x0"/>:
    /// the forward process q(x_t | x_0) at that position's noise level, in the space the loop steps (diffusers' add_noise at
    /// step_index = index, which SDEdit's image-to-image starts from; Meng et al. 2022). VP samplers: sqrt(alpha_bar) x_0 +
    /// sqrt(1 - alpha_bar) noise (DDPM eq. 4) with the position's alpha_bar; sigma-space samplers: x_0 + sigma noise (Karras et al.
    /// 2022, eq. 1 with s = 1) with the position's sigma. A new tensor with x0's dtype and device.
    /// </summary>
    /// <param name="x0">Clean samples, [B, ...].</param>
    /// <param name="noise">Standard normal noise shaped like <paramref name="x0"/>.</param>
    /// <param name="index">A loop position, 0 .. Timesteps.Count - 1.</param>
    Tensor AddNoiseAt(Tensor x0, Tensor noise, int index);

    /// <summary>
    /// The timestep that <see cref="Step"/> moves <paramref name="timestep"/> to: the next element of <see cref="Timesteps"/>,
    /// or -1 (x_0) after the last. For a timestep not in the list, the largest listed timestep below it (or -1).
    /// </summary>
    /// <param name="timestep">A timestep in [0, T).</param>
    int PreviousTimestep(int timestep);

    /// <summary>diffusers' <c>order</c>: network calls per solver step (2 for Heun's method; 1 for single-call and multistep methods).</summary>
    int Order => 1;

    /// <summary>What the model output passed to a step is (epsilon, x_0 or v).</summary>
    PredictionType Prediction => PredictionType.Epsilon;

    /// <summary>What this sampler supports beyond plain generation.</summary>
    SchedulerCapabilities Capabilities => SchedulerCapabilities.None;

    /// <summary>A short name for messages.</summary>
    string Name => GetType().Name;

    /// <summary>diffusers' <c>init_noise_sigma</c>: the standard deviation of the loop's starting sample (1 for VP samplers).</summary>
    double InitNoiseSigma => 1.0;

    /// <summary>
    /// The timestep the network sees at loop position <paramref name="index"/> of <see cref="Timesteps"/>: the integer timestep itself
    /// for VP samplers, a continuous one for sigma-space samplers (a whole number is passed to the network as int64, any other as float32).
    /// </summary>
    /// <param name="index">A loop position, 0 .. Timesteps.Count - 1.</param>
    double ModelTimestep(int index) => Timesteps[index];

    /// <summary>diffusers' <c>scale_model_input</c>: what the network sees for <paramref name="sample"/> at loop position
    /// <paramref name="index"/>; the sample itself (not a copy) for VP samplers.</summary>
    /// <param name="sample">The loop's current sample.</param>
    /// <param name="index">A loop position, 0 .. Timesteps.Count - 1.</param>
    Tensor ScaleModelInput(Tensor sample, int index) => sample;

    /// <summary>
    /// The step at loop position <paramref name="index"/>: <see cref="Step"/> at Timesteps[index] for VP samplers, also returning the
    /// x_0 it predicted. This default recomputes x_0 from the output without clipping; the library's schedulers return the one
    /// their update used.
    /// </summary>
    /// <param name="index">A loop position, 0 .. Timesteps.Count - 1.</param>
    /// <param name="modelOutput">The network's output for <see cref="ScaleModelInput"/> at <see cref="ModelTimestep"/>.</param>
    /// <param name="sample">The loop's current sample (unscaled).</param>
    /// <param name="noise">Standard normal noise shaped like <paramref name="sample"/> when <see cref="NeedsNoise"/>.</param>
    SchedulerOutput StepAt(int index, Tensor modelOutput, Tensor sample, Tensor? noise = null)
    {
        int t = Timesteps[index];
        var prev = Step(modelOutput, t, sample, noise);
        using var scope = NewDisposeScope();
        var (x0, _) = SchedulerCore.ToX0AndEps(SchedulerCore.SplitOutput(modelOutput, sample).Prediction, sample, Schedule.AlphaBar(t), Prediction);
        return new SchedulerOutput(prev, x0.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// The variance Sigma of a stochastic step's Gaussian from <paramref name="timestep"/>, broadcastable to the sample, for classifier
    /// guidance's mean shift x_prev = mu + s Sigma g (Dhariwal &amp; Nichol 2021, Algorithm 1); null (the default) when guidance should
    /// shift the noise prediction instead (Algorithm 2, eq. 14).
    /// </summary>
    /// <param name="modelOutput">The network's output (a learned-variance model's variance channels included).</param>
    /// <param name="sample">x_t.</param>
    /// <param name="timestep">t.</param>
    Tensor? GuidanceVariance(Tensor modelOutput, Tensor sample, int timestep) => null;
}
