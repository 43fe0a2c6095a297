using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Diffusion.Schedulers;

namespace Microsoft.ML.Diffusion;

/// <summary>How <see cref="DiffusionModel"/> samples images: sampler, number of steps, noise seed.</summary>
/// <remarks>The classifier of classifier guidance, a transformer of the ML.NET surface, is declared with the surface
/// (Transforms/SamplerOptions.Classifier.cs); sampling sees it as <see cref="GuidanceClassifier"/>.</remarks>
public sealed partial class SamplerOptions
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
    /// the Karras sigmas). The flow-matching samplers ignore it (their noise levels are diffusers' linspace(1, 1/T, n)). With a
    /// zero-terminal-SNR model (<see cref="DiffusionTrainer.Options.RescaleBetasZeroSnr"/>) use <see cref="TimestepSpacing.Trailing"/>,
    /// so that sampling starts at the last timestep (Lin et al. 2024, section 3.3).
    /// </summary>
    public TimestepSpacing? Spacing { get; set; }

    /// <summary>DDIM's eta (Song et al. 2021, eq. 16): 0 is deterministic, 1 gives DDPM's variance. Must be >= 0.</summary>
    public float Eta { get; set; }

    /// <summary>
    /// Seed of the first image; image i of <see cref="DiffusionModel.Generate(int, SamplerOptions?)"/> uses
    /// Seed + i, so <c>Generate(n, Seed = s)</c> equals transforming <c>CreateRequests(n, s)</c>.
    /// </summary>
    public uint Seed { get; set; }

    /// <summary>Clip the predicted x0 to [-1, 1] at every step (DDPM's reference implementation does). Default true. The flow-matching
    /// samplers ignore it, and <see cref="DynamicThresholding"/>: their update does not go through x0.</summary>
    public bool ClipSample { get; set; } = true;

    /// <summary>
    /// Dynamic thresholding of the predicted x0 at every step (Saharia et al. 2022, "Imagen", section 2.3): per image,
    /// s = max(1, 99.5th percentile of |x0|), then x0 is clamped to [-s, s] and divided by s. Replaces
    /// <see cref="ClipSample"/> when true. Default false.
    /// </summary>
    public bool DynamicThresholding { get; set; }

    /// <summary>
    /// diffusers' <c>dynamic_thresholding_ratio</c>: the quantile of |x0| that <see cref="DynamicThresholding"/> reads (the
    /// "percentile" of Imagen). Default 0.995; must lie in [0, 1].
    /// </summary>
    public double DynamicThresholdingRatio { get; set; } = 0.995;

    /// <summary>
    /// diffusers' <c>sample_max_value</c>: the largest threshold s of <see cref="DynamicThresholding"/>, s = min(max(quantile, 1),
    /// SampleMaxValue) (a value below 1 makes s that value). Default: no bound (Imagen's rule). diffusers' own default is 1.0, which
    /// makes dynamic thresholding plain clipping: copy the value of a scheduler_config.json that enables thresholding. Must be &gt; 0.
    /// </summary>
    public double SampleMaxValue { get; set; } = double.PositiveInfinity;

    /// <summary>
    /// diffusers' <c>set_alpha_to_one</c> (DDIM only; other samplers ignore it): whether DDIM's step after the last timestep lands on
    /// alpha_bar = 1 (true, default) or on alpha_bar of timestep 0 (false: diffusers' final_alpha_cumprod = alphas_cumprod[0], which
    /// Stable Diffusion's configs use).
    /// </summary>
    public bool SetAlphaToOne { get; set; } = true;

    /// <summary>
    /// diffusers' <c>use_karras_sigmas</c> for the multistep solvers (<see cref="SamplerKind.DpmSolverPlusPlus"/>,
    /// <see cref="SamplerKind.DpmSolverPlusPlusSde"/>, <see cref="SamplerKind.UniPC"/>): step through the noise levels of Karras et
    /// al. 2022 (eq. 5, rho = 7) over the schedule's whole range instead of the <see cref="Spacing"/> timesteps; the network sees each
    /// level's nearest timestep. <see cref="SamplerKind.DpmSolverPlusPlusKarras"/> is DPM-Solver++ with this set. Not with
    /// <see cref="UseLuLambdas"/> or <see cref="Classifier"/>. Default false.
    /// </summary>
    public bool UseKarrasSigmas { get; set; }

    /// <summary>
    /// diffusers' <c>use_lu_lambdas</c> for the multistep solvers: noise levels evenly spaced in lambda = log(alpha/sigma) (Lu et al.
    /// 2022's uniform logSNR steps) over the schedule's whole range. Not with Karras sigmas or <see cref="Classifier"/>. Default false.
    /// </summary>
    public bool UseLuLambdas { get; set; }

    /// <summary>
    /// diffusers' <c>final_sigmas_type</c> for the multistep solvers: where the last step lands, <see cref="FinalSigmasType.Zero"/>
    /// (default: on x0 itself) or <see cref="FinalSigmasType.SigmaMin"/> (on the noise level of timestep 0).
    /// </summary>
    public FinalSigmasType FinalSigmasType { get; set; } = FinalSigmasType.Zero;

    /// <summary>
    /// diffusers' <c>lower_order_final</c> for the multistep solvers: take the last step at first order (DPM-Solver++: when the loop has
    /// fewer than 15 steps; UniPC: always), which steadies few-step sampling. A last step onto sigma = 0 is first order regardless.
    /// Default true.
    /// </summary>
    public bool LowerOrderFinal { get; set; } = true;

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
        if (!(DynamicThresholdingRatio >= 0 && DynamicThresholdingRatio <= 1))
            throw new ArgumentOutOfRangeException(nameof(DynamicThresholdingRatio), DynamicThresholdingRatio,
                "SamplerOptions.DynamicThresholdingRatio (diffusers' dynamic_thresholding_ratio) must lie in [0, 1] (0.995 in Imagen).");
        if (!(SampleMaxValue > 0))
            throw new ArgumentOutOfRangeException(nameof(SampleMaxValue), SampleMaxValue,
                "SamplerOptions.SampleMaxValue (diffusers' sample_max_value) must be > 0 (infinity: no bound).");
        if (!Enum.IsDefined(FinalSigmasType))
            throw new ArgumentOutOfRangeException(nameof(FinalSigmasType), FinalSigmasType,
                $"Unknown final sigmas type; expected one of {string.Join(", ", Enum.GetNames<FinalSigmasType>())}.");
        if (!Enum.IsDefined(Precision))
            throw new ArgumentOutOfRangeException(nameof(Precision), Precision, $"Unknown precision; expected one of {string.Join(", ", Enum.GetNames<Precision>())}.");
        if (!Enum.IsDefined(Engine))
            throw new ArgumentOutOfRangeException(nameof(Engine), Engine, $"Unknown inference engine; expected one of {string.Join(", ", Enum.GetNames<InferenceEngine>())}.");
        var row = SamplerRegistry.Find(Sampler)
            ?? throw new ArgumentOutOfRangeException(nameof(Sampler), Sampler,
                $"Unknown sampler; expected one of {string.Join(", ", SamplerRegistry.All.Select(r => r.Kind))}.");
        ValidateMultistepOptions(row);
        if (GuidanceClassifier is not null && !row.Capabilities.HasFlag(SchedulerCapabilities.ClassifierGuidance))
            throw new ArgumentOutOfRangeException(nameof(Sampler), Sampler,
                $"SamplerOptions.Classifier is set, but classifier guidance cannot steer the {row.DisplayName} sampler (it works in sigma space, " +
                $"while the noisy classifier needs the VP sample at an integer timestep); use one of: {SamplerRegistry.NamesWith(SchedulerCapabilities.ClassifierGuidance)}.");
        if (GuidanceClassifier is not null && (UseKarrasSigmas || UseLuLambdas))
            throw new ArgumentOutOfRangeException(UseKarrasSigmas ? nameof(UseKarrasSigmas) : nameof(UseLuLambdas), true,
                $"SamplerOptions.Classifier is set, but classifier guidance needs the sampler's timestep noise levels; turn off " +
                $"{(UseKarrasSigmas ? nameof(UseKarrasSigmas) : nameof(UseLuLambdas))}.");
    }

    /// <summary>Karras sigmas, Lu lambdas, the final level and lower_order_final configure the multistep solvers only, and Karras
    /// sigmas exclude Lu lambdas.</summary>
    private void ValidateMultistepOptions(SamplerInfo row)
    {
        bool karras = UseKarrasSigmas || Sampler == SamplerKind.DpmSolverPlusPlusKarras;
        if (karras && UseLuLambdas)
            throw new ArgumentOutOfRangeException(nameof(UseLuLambdas), UseLuLambdas,
                $"SamplerOptions.UseLuLambdas cannot be combined with Karras sigmas ({(UseKarrasSigmas ? "UseKarrasSigmas" : row.DisplayName)}); choose one.");
        if (row.Capabilities.HasFlag(SchedulerCapabilities.MultistepOptions))
            return;
        string? setting = UseKarrasSigmas ? nameof(UseKarrasSigmas)
            : UseLuLambdas ? nameof(UseLuLambdas)
            : FinalSigmasType != FinalSigmasType.Zero ? nameof(FinalSigmasType)
            : !LowerOrderFinal ? nameof(LowerOrderFinal)
            : null;
        if (setting is not null)
            throw new ArgumentOutOfRangeException(setting, Sampler,
                $"SamplerOptions.{setting} configures the multistep solvers ({SamplerRegistry.NamesWith(SchedulerCapabilities.MultistepOptions)}); " +
                $"the {row.DisplayName} sampler does not take it.");
    }
}
