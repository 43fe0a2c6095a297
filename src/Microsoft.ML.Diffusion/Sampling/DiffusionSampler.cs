using Microsoft.ML.Diffusion.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Sampling;

/// <summary>
/// The denoising loop shared by generation, super-resolution, interpolation and image-to-image (SDEdit): starts from Gaussian
/// noise, or from an image noised to a loop position, and applies the scheduler's steps. Each image draws its noise from its own
/// generator seeded with its seed, so an image depends on its seed and the sampler settings only, not on the batch it is in.
/// </summary>
internal static class DiffusionSampler
{
    /// <summary>
    /// Samples one image per seed. <paramref name="denoiser"/> maps (x_t [B,C,H,W], t [B] int64) to the
    /// model output the scheduler expects (its <see cref="PredictionType"/>). Returns x_0 as a float tensor
    /// [B, C, H, W] in [-1, 1] on the CPU.
    /// </summary>
    /// <param name="denoiser">The network.</param>
    /// <param name="scheduler">The sampler, with its timesteps set.</param>
    /// <param name="seeds">One seed per image: image i draws x_T and any per-step noise from a generator seeded with seeds[i].</param>
    /// <param name="imageShape">[C, H, W].</param>
    /// <param name="device">Where the network runs.</param>
    /// <param name="progress">Receives one report per step.</param>
    /// <param name="cancellationToken">Checked before every step.</param>
    /// <param name="batchIndex">Reported in <see cref="SamplingProgress.BatchIndex"/>.</param>
    /// <param name="batchCount">Reported in <see cref="SamplingProgress.BatchCount"/>.</param>
    /// <param name="initialNoise">When set, x_T itself ([B, C, H, W] with B = seeds.Count, any device; copied, not modified)
    /// instead of the per-seed draw; the seeds then only feed the per-step noise of samplers that need it.</param>
    /// <param name="guidance">Classifier guidance (Dhariwal &amp; Nichol 2021) applied to every step; null: none.</param>
    /// <param name="initialImage">SDEdit (Meng et al. 2022): the clean samples x_0 [B, C, H, W] (any device; not modified) that the loop
    /// starts from at loop position <paramref name="startIndex"/> instead of from x_T. Image i's first draw (the draw that is x_T in
    /// generation) is the noise of q(x_t | x_0) (<see cref="IDiffusionScheduler.AddNoiseAt"/>); at position 0 the loop starts from x_T
    /// itself (strength 1 is generation), and at Timesteps.Count (no step left) it returns x_0.</param>
    /// <param name="startIndex">With <paramref name="initialImage"/>: the first loop position run, 0 .. Timesteps.Count.</param>
    /// <param name="endIndex">The loop position before which the loop stops (startIndex .. Timesteps.Count); the sample is returned as
    /// it is there, x_t of that position's timestep. Null runs to the end and returns x_0.</param>
    public static Tensor Sample(
        Func<Tensor, Tensor, Tensor> denoiser,
        IDiffusionScheduler scheduler,
        IReadOnlyList<uint> seeds,
        long[] imageShape,
        Device device,
        IProgress<SamplingProgress>? progress = null,
        CancellationToken cancellationToken = default,
        int batchIndex = 0,
        int batchCount = 0,
        Tensor? initialNoise = null,
        ClassifierGuidance? guidance = null,
        Tensor? initialImage = null,
        int startIndex = 0,
        int? endIndex = null)
    {
        ArgumentNullException.ThrowIfNull(denoiser);
        ArgumentNullException.ThrowIfNull(scheduler);
        ArgumentNullException.ThrowIfNull(seeds);
        if (seeds.Count == 0) throw new ArgumentException("At least one seed is needed.", nameof(seeds));
        CheckShape(initialNoise, seeds.Count, imageShape, nameof(initialNoise));
        CheckShape(initialImage, seeds.Count, imageShape, nameof(initialImage));
        if (initialNoise is not null && initialImage is not null)
            throw new ArgumentException("Give initialNoise (x_T) or initialImage (SDEdit's x_0), not both.", nameof(initialImage));
        var timesteps = scheduler.Timesteps;
        if (startIndex < 0 || startIndex > timesteps.Count || (startIndex > 0 && initialImage is null))
            throw new ArgumentOutOfRangeException(nameof(startIndex), startIndex,
                $"startIndex must lie between 0 and the {timesteps.Count} loop positions, and be 0 without an initialImage.");
        int end = endIndex ?? timesteps.Count;
        if (end < startIndex || end > timesteps.Count)
            throw new ArgumentOutOfRangeException(nameof(endIndex), endIndex,
                $"endIndex must lie between startIndex ({startIndex}) and the {timesteps.Count} loop positions.");

        var generators = seeds.Select(s => new Generator(s, CPU)).ToArray();
        try
        {
            using var noGrad = no_grad();
            // x_T ~ N(0, I) (DDPM algorithm 2, line 1), one stream per image; a sigma-space sampler starts from
            // init_noise_sigma times it (so its model input at the first step is that same x_T).
            Tensor x = initialNoise is null ? NextNoise(generators, imageShape, device) : CopyTo(initialNoise, device);
            if (initialImage is not null && startIndex > 0)
            {
                // SDEdit: x = q(x_t | x_0) at the start position with the draw that would have been x_T as its noise; with no step
                // left, x_0 itself.
                using var x0 = CopyTo(initialImage, device);
                var noised = startIndex < timesteps.Count ? scheduler.AddNoiseAt(x0, x, startIndex) : x0.clone();
                x.Dispose();
                x = noised;
            }
            else
            {
                double initSigma = scheduler.InitNoiseSigma;
                if (initSigma != 1.0)
                {
                    using Scalar s = initSigma.ToScalar();
                    x.mul_(s);
                }
            }

            for (int i = startIndex; i < end; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int t = timesteps[i];
                Tensor next;
                using (var scope = NewDisposeScope())
                {
                    var tt = ModelTimesteps(scheduler.ModelTimestep(i), seeds.Count, device);
                    var eps = denoiser(scheduler.ScaleModelInput(x, i), tt);
                    var z = scheduler.NeedsNoise ? NextNoise(generators, imageShape, device) : null;
                    // Classifier guidance (integer-timestep samplers only) computes its gradient with autograd enabled inside this no_grad loop.
                    next = (guidance is null ? scheduler.StepAt(i, eps, x, z).PrevSample : guidance.Step(scheduler, eps, t, tt, x, z)).MoveToOuterDisposeScope();
                }
                x.Dispose();
                x = next;
                progress?.Report(new SamplingProgress(i + 1 - startIndex, end - startIndex, t, batchIndex, batchCount));
            }
            var result = x.cpu();
            if (!ReferenceEquals(result, x)) x.Dispose();
            return result;
        }
        finally
        {
            foreach (var g in generators) g.Dispose();
        }
    }

    private static void CheckShape(Tensor? x, int count, long[] imageShape, string name)
    {
        if (x is null) return;
        var expected = new[] { (long)count }.Concat(imageShape).ToArray();
        if (!x.shape.SequenceEqual(expected))
            throw new ArgumentException(
                $"{name} must have shape [{string.Join(", ", expected)}] (one image per seed); got [{string.Join(", ", x.shape)}].", name);
    }

    /// <summary>The network's [B] time input: int64 for a whole-number timestep (every VP sampler), float32 for a continuous one.</summary>
    internal static Tensor ModelTimesteps(double t, int batch, Device device) =>
        t == Math.Floor(t)
            ? full(new long[] { batch }, (long)t, dtype: int64, device: device)
            : full(new long[] { batch }, t, dtype: float32, device: device);

    /// <summary>A float32 copy of <paramref name="x"/> on <paramref name="device"/> that the loop may dispose.</summary>
    private static Tensor CopyTo(Tensor x, Device device)
    {
        using var scope = NewDisposeScope();
        var copy = x.detach().to_type(float32).clone();
        var moved = device.type == DeviceType.CPU && copy.device_type == DeviceType.CPU ? copy : copy.to(device);
        return moved.MoveToOuterDisposeScope();
    }

    /// <summary>x_T for one seed: the standard normal [C, H, W] tensor (float32, CPU) that <see cref="Sample"/> draws first for it.</summary>
    internal static Tensor InitialNoise(uint seed, long[] imageShape)
    {
        using var g = new Generator(seed, CPU);
        return randn(imageShape, dtype: float32, device: CPU, generator: g);
    }

    /// <summary>Draws standard normal noise for each image from its own generator and stacks it on <paramref name="device"/>.</summary>
    private static Tensor NextNoise(Generator[] generators, long[] imageShape, Device device)
    {
        using var scope = NewDisposeScope();
        var parts = generators.Select(g => randn(imageShape, dtype: float32, device: CPU, generator: g)).ToArray();
        var stacked = stack(parts);
        var moved = device.type == DeviceType.CPU ? stacked : stacked.to(device);
        return moved.MoveToOuterDisposeScope();
    }
}
