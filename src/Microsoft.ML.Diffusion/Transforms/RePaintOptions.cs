using Microsoft.ML.Diffusion.Sampling;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// The RePaint sampling settings shared by <see cref="InpaintOptions"/> and <see cref="UpscaleOptions"/>
/// (Lugmayr et al. 2022; defaults as in the paper: 250 steps, jump length 10, 10 resamplings).
/// </summary>
/// <remarks>
/// Cost: each batch of up to <see cref="BatchSize"/> rows makes
/// <c>steps + (r - 1) * j * ceil((steps - j) / j)</c> network calls (steps = <see cref="Steps"/>, j = <see cref="JumpLength"/>,
/// r = <see cref="Resamplings"/>; <see cref="NetworkCalls"/> computes it): 2,410 with the defaults, about 10 times plain
/// sampling's 250. On a CPU that is minutes per batch for a 28x28 model; Steps = 50 with r = 5 (410 calls) or r = 1 (50 calls)
/// trades quality for time. A transform logs each batch's start and every tenth of its schedule entries to the MLContext log
/// (<c>mlContext.Log</c>), sends every entry to <see cref="Progress"/>, and stops between two entries when
/// <see cref="CancellationToken"/> is cancelled (the cursor then throws <see cref="OperationCanceledException"/>).
/// </remarks>
public abstract class RePaintOptions
{
    /// <summary>The default number of sampling steps (RePaint uses 250 of the model's 1000 timesteps).</summary>
    public const int DefaultSteps = 250;

    /// <summary>DDPM sampling steps (levels of the jump schedule). Null means min(250, T). Must lie in 1..T.</summary>
    public int? Steps { get; set; }

    /// <summary>Levels jumped back at each resampling (RePaint's j). Default 10.</summary>
    public int JumpLength { get; set; } = 10;

    /// <summary>Times each stretch of <see cref="JumpLength"/> levels is denoised (RePaint's r). Default 10; 1 turns resampling off.
    /// The network runs about <see cref="Resamplings"/> times as often as in plain sampling (<see cref="RePaintSchedule.NetworkCalls"/>).</summary>
    public int Resamplings { get; set; } = 10;

    /// <summary>Seed of the first row; row i draws its noise from a generator seeded with Seed + i, so its output does not depend on its batch.</summary>
    public uint Seed { get; set; }

    /// <summary>Rows filled together in one network call. Default 16. Does not change the images.</summary>
    public int BatchSize { get; set; } = 16;

    /// <summary>For a grayscale model (Channels = 1): false (default) makes a color input image (one whose R, G and B differ
    /// somewhere) an error naming the column and row; true converts color images to their ITU-R BT.601 luma. Grayscale images
    /// (equal channels, as mlContext.Transforms.ConvertToGrayscale writes them) are accepted either way. Saved with the transformer.</summary>
    public bool ConvertToGrayscale { get; set; }

    /// <summary>
    /// Where the network calls run: <see cref="InferenceEngine.TorchSharp"/> (default) or <see cref="InferenceEngine.OnnxRuntime"/>
    /// (the model's exported graph in one ONNX Runtime session, made on first use and reused; a latent model's decoder runs there
    /// too, its encoder on TorchSharp). The RePaint loop (noise, the known/unknown merge, the jumps back) stays on TorchSharp
    /// tensors; the images agree with TorchSharp's to float32 rounding. Saved with the transformer (transformers saved before the
    /// option load with <see cref="InferenceEngine.TorchSharp"/>).
    /// </summary>
    public InferenceEngine Engine { get; set; } = InferenceEngine.TorchSharp;

    /// <summary>Receives one report per schedule entry of each batch: <see cref="SamplingProgress.Step"/> counts up to
    /// <see cref="SamplingProgress.TotalSteps"/> (<see cref="ScheduleLength"/>) in every batch, and in a transform
    /// <see cref="SamplingProgress.BatchIndex"/> is the batch's first row / <see cref="BatchSize"/>. Not saved.</summary>
    public IProgress<SamplingProgress>? Progress { get; set; }

    /// <summary>Stops sampling between two schedule entries (throws <see cref="OperationCanceledException"/>). Not saved.</summary>
    public CancellationToken CancellationToken { get; set; }

    /// <summary>The number of steps on a model with <paramref name="timesteps"/> timesteps: <see cref="Steps"/> or min(250, T).</summary>
    public int ResolveSteps(int timesteps) => Steps ?? Math.Min(DefaultSteps, timesteps);

    /// <summary>Network calls per batch on a model with <paramref name="timesteps"/> timesteps.</summary>
    public int NetworkCalls(int timesteps) => RePaintSchedule.NetworkCalls(ResolveSteps(timesteps), JumpLength, Resamplings);

    /// <summary>Schedule entries (progress reports) per batch on a model with <paramref name="timesteps"/> timesteps.</summary>
    public int ScheduleLength(int timesteps) => RePaintSchedule.Jump(ResolveSteps(timesteps), JumpLength, Resamplings).Length;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the setting, its value and what is expected.</summary>
    public virtual void Validate(int timesteps)
    {
        string type = GetType().Name;
        if (Steps is int s && (s < 1 || s > timesteps))
            throw new ArgumentOutOfRangeException(nameof(Steps), s, $"{type}.Steps must be between 1 and the model's {timesteps} timesteps.");
        if (JumpLength < 1)
            throw new ArgumentOutOfRangeException(nameof(JumpLength), JumpLength, $"{type}.JumpLength must be >= 1.");
        if (Resamplings < 1)
            throw new ArgumentOutOfRangeException(nameof(Resamplings), Resamplings, $"{type}.Resamplings must be >= 1 (1 = no resampling).");
        if (BatchSize < 1)
            throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, $"{type}.BatchSize must be >= 1.");
        if (!Enum.IsDefined(Engine))
            throw new ArgumentOutOfRangeException(nameof(Engine), Engine,
                $"{type}.Engine: unknown inference engine; expected one of {string.Join(", ", Enum.GetNames<InferenceEngine>())}.");
    }

    /// <summary>A shallow copy (the same Progress and CancellationToken).</summary>
    internal object CloneOptions() => MemberwiseClone();

    /// <summary>The seed of row <paramref name="row"/>: Seed + row (wrapping).</summary>
    internal uint SeedOfRow(long row) => unchecked(Seed + (uint)row);

    /// <summary>Writes the persisted settings (not Progress or CancellationToken).</summary>
    internal void WriteSettings(BinaryWriter writer)
    {
        // int: Steps (0 = default); int: JumpLength; int: Resamplings; uint: Seed; int: BatchSize
        writer.Write(Steps ?? 0);
        writer.Write(JumpLength);
        writer.Write(Resamplings);
        writer.Write(Seed);
        writer.Write(BatchSize);
    }

    /// <summary>Reads what <see cref="WriteSettings"/> wrote.</summary>
    internal void ReadSettings(BinaryReader reader)
    {
        int steps = reader.ReadInt32();
        Steps = steps == 0 ? null : steps;
        JumpLength = reader.ReadInt32();
        Resamplings = reader.ReadInt32();
        Seed = reader.ReadUInt32();
        BatchSize = reader.ReadInt32();
    }
}
