using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedulers;

namespace Microsoft.ML.Diffusion;

/// <summary>How <see cref="DiffusionModel"/> samples images: sampler, number of steps, noise seed.</summary>
public sealed class SamplerOptions
{
    /// <summary>The sampler. Default <see cref="SamplerKind.Ddim"/>.</summary>
    public SamplerKind Sampler { get; set; } = SamplerKind.Ddim;

    /// <summary>
    /// Number of solver steps, which is the number of network calls for every sampler but <see cref="SamplerKind.HeunKarras"/>
    /// (2 Steps - 1 calls). Null means the sampler's default (see <see cref="SamplerKind"/>): all T timesteps for DDPM, 50 for DDIM,
    /// 20 for DPM-Solver++. Must lie in 1..T.
    /// </summary>
    public int? Steps { get; set; }

    /// <summary>
    /// How the <see cref="Steps"/> timesteps are spread over the T training timesteps. Null means the sampler's default:
    /// <see cref="TimestepSpacing.Leading"/> for DDPM and DDIM, <see cref="TimestepSpacing.Trailing"/> for DPM-Solver++, and
    /// diffusers' default for the others (<see cref="TimestepSpacing.Linspace"/> for the Euler and Heun samplers, where it also bounds
    /// the Karras sigmas).
    /// </summary>
    public TimestepSpacing? Spacing { get; set; }

    /// <summary>DDIM's eta (Song et al. 2021, eq. 16): 0 is deterministic, 1 gives DDPM's variance. Must be >= 0.</summary>
    public float Eta { get; set; }

    /// <summary>
    /// Seed of the first image; image i of <see cref="DiffusionModel.Generate(int, SamplerOptions?)"/> uses
    /// Seed + i, so <c>Generate(n, Seed = s)</c> equals transforming <c>CreateRequests(n, s)</c>.
    /// </summary>
    public uint Seed { get; set; }

    /// <summary>Clip the predicted x0 to [-1, 1] at every step (DDPM's reference implementation does). Default true.</summary>
    public bool ClipSample { get; set; } = true;

    /// <summary>
    /// Dynamic thresholding of the predicted x0 at every step (Saharia et al. 2022, "Imagen", section 2.3): per image,
    /// s = max(1, 99.5th percentile of |x0|), then x0 is clamped to [-s, s] and divided by s. Replaces
    /// <see cref="ClipSample"/> when true. Default false.
    /// </summary>
    public bool DynamicThresholding { get; set; }

    /// <summary>
    /// The number format of the network's forward passes: <see cref="Precision.Fp32"/> (default) or
    /// <see cref="Precision.Bf16Mixed"/>: a bfloat16 copy of the weights computes the network's output, which is converted
    /// back to float32 for the sampler's update (x_t and all scheduler arithmetic stay float32). bfloat16 keeps about 3
    /// significant digits, so images differ slightly from float32 ones (a few grey levels); faster where the CPU has
    /// AVX-512 BF16 / AMX or on recent GPUs.
    /// </summary>
    public Precision Precision { get; set; } = Precision.Fp32;

    /// <summary>
    /// Where the network calls run: <see cref="InferenceEngine.TorchSharp"/> (default) or <see cref="InferenceEngine.OnnxRuntime"/>
    /// (the exported graph in ONNX Runtime; see there for what it covers). Not saved with the model.
    /// </summary>
    public InferenceEngine Engine { get; set; } = InferenceEngine.TorchSharp;

    /// <summary>
    /// Classifier-free guidance weight w for class-conditional models (Ho &amp; Salimans 2022, eq. 6, in the form diffusers
    /// uses): eps = eps_uncond + w (eps_cond - eps_uncond). 0 samples the unconditional model (the null label), 1 (default)
    /// the plain conditional model, w &gt; 1 follows the class more strongly at the cost of diversity (diffusers' DiT
    /// pipeline uses 4, Stable Diffusion 7.5; 2-5 suits small class-conditional models). Any value other than 0 and 1
    /// runs both branches in one forward pass of twice the batch. Every sampler supports it. Must be &gt;= 0; a value other
    /// than 1 needs a class-conditional model.
    /// </summary>
    public float GuidanceScale { get; set; } = 1f;

    /// <summary>
    /// Classifier guidance (Dhariwal &amp; Nichol 2021): a noisy classifier trained for this diffusion model
    /// (<c>mlContext.Generative.NoisyClassifier</c>: same noise schedule, T, image size and channels) that steers every step towards
    /// the requested labels with <see cref="ClassifierScale"/>. Needs labels (<see cref="DiffusionModel.Generate(IReadOnlyList{int}, SamplerOptions?)"/>,
    /// <see cref="DiffusionModel.GenerateTensor(IReadOnlyList{uint}, IReadOnlyList{int}, SamplerOptions?)"/>, or requests with a label
    /// column); an unconditional diffusion model then accepts labels too, and a class-conditional one uses them for both
    /// classifier-free guidance and the classifier. Not supported for latent diffusion models, nor by the sigma-space samplers (Euler, Heun,
    /// Euler ancestral: <see cref="Validate"/> names the samplers that support it). Null (default): no classifier guidance.
    /// Not saved with the model.
    /// </summary>
    public NoisyClassifierModel? Classifier { get; set; }

    /// <summary>
    /// The classifier guidance scale s (Dhariwal &amp; Nichol 2021, Algorithms 1 and 2): DDPM shifts the mean by s Sigma grad log p(y|x_t);
    /// DDIM and DPM-Solver++ use eps - s sqrt(1 - alpha_bar_t) grad log p(y|x_t). 0 leaves sampling unchanged; the paper uses 1-10
    /// (larger: more class-typical, less diverse). Used only with <see cref="Classifier"/>. Must be a finite number &gt;= 0. Default 1.
    /// </summary>
    public float ClassifierScale { get; set; } = 1f;

    /// <summary>Images denoised together in one network call. Default 64. Does not change the images.</summary>
    public int BatchSize { get; set; } = 64;

    /// <summary>Receives one report per denoising step of each batch.</summary>
    public IProgress<SamplingProgress>? Progress { get; set; }

    /// <summary>Stops sampling between two steps; the model stays usable.</summary>
    public CancellationToken CancellationToken { get; set; }

    /// <summary>A copy of these options.</summary>
    public SamplerOptions Clone() => (SamplerOptions)MemberwiseClone();

    /// <summary>The number of steps this sampler takes on a model with <paramref name="timesteps"/> timesteps.</summary>
    public int ResolveSteps(int timesteps) => Steps ?? SamplerRegistry.Get(Sampler, nameof(Sampler)).DefaultSteps(timesteps);

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the setting, its value and what is expected.</summary>
    public void Validate(int timesteps)
    {
        if (Steps is int s && (s < 1 || s > timesteps))
            throw new ArgumentOutOfRangeException(nameof(Steps), s, $"SamplerOptions.Steps must be between 1 and the model's {timesteps} timesteps.");
        if (float.IsNaN(Eta) || Eta < 0)
            throw new ArgumentOutOfRangeException(nameof(Eta), Eta, "SamplerOptions.Eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM variance).");
        if (!(GuidanceScale >= 0) || float.IsInfinity(GuidanceScale))
            throw new ArgumentOutOfRangeException(nameof(GuidanceScale), GuidanceScale,
                "SamplerOptions.GuidanceScale must be a finite number >= 0 (0 = unconditional, 1 = conditional, > 1 = guided).");
        if (!(ClassifierScale >= 0) || float.IsInfinity(ClassifierScale))
            throw new ArgumentOutOfRangeException(nameof(ClassifierScale), ClassifierScale,
                $"SamplerOptions.ClassifierScale is {ClassifierScale}; expected a finite number >= 0 (0 = no classifier guidance, 1-10 typical).");
        if (BatchSize < 1)
            throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "SamplerOptions.BatchSize must be >= 1.");
        if (Spacing is TimestepSpacing spacing && !Enum.IsDefined(spacing))
            throw new ArgumentOutOfRangeException(nameof(Spacing), spacing, $"Unknown timestep spacing; expected one of {string.Join(", ", Enum.GetNames<TimestepSpacing>())}.");
        if (!Enum.IsDefined(Precision))
            throw new ArgumentOutOfRangeException(nameof(Precision), Precision, $"Unknown precision; expected one of {string.Join(", ", Enum.GetNames<Precision>())}.");
        if (!Enum.IsDefined(Engine))
            throw new ArgumentOutOfRangeException(nameof(Engine), Engine, $"Unknown inference engine; expected one of {string.Join(", ", Enum.GetNames<InferenceEngine>())}.");
        var row = SamplerRegistry.Find(Sampler)
            ?? throw new ArgumentOutOfRangeException(nameof(Sampler), Sampler,
                $"Unknown sampler; expected one of {string.Join(", ", SamplerRegistry.All.Select(r => r.Kind))}.");
        if (Classifier is not null && !row.Capabilities.HasFlag(SchedulerCapabilities.ClassifierGuidance))
            throw new ArgumentOutOfRangeException(nameof(Sampler), Sampler,
                $"SamplerOptions.Classifier is set, but classifier guidance cannot steer the {row.DisplayName} sampler (it works in sigma space, " +
                $"while the noisy classifier needs the VP sample at an integer timestep); use one of: {SamplerRegistry.NamesWith(SchedulerCapabilities.ClassifierGuidance)}.");
    }
}
