using Microsoft.ML.Diffusion.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Sampling;

/// <summary>
/// The denoising loop shared by generation (and later inpainting and upscaling): starts from Gaussian noise
/// and applies the scheduler's steps. Each image draws its noise from its own generator seeded with its seed,
/// so an image depends on its seed and the sampler settings only, not on the batch it is in.
/// </summary>
public static class DiffusionSampler
{
    /// <summary>
    /// Samples one image per seed. <paramref name="denoiser"/> maps (x_t [B,C,H,W], t [B] int64) to the
    /// predicted noise. Returns x_0 as a float tensor [B, C, H, W] in [-1, 1] on the CPU.
    /// </summary>
    public static Tensor Sample(
        Func<Tensor, Tensor, Tensor> denoiser,
        IDiffusionScheduler scheduler,
        IReadOnlyList<uint> seeds,
        long[] imageShape,
        Device device,
        IProgress<SamplingProgress>? progress = null,
        CancellationToken cancellationToken = default,
        int batchIndex = 0,
        int batchCount = 0)
    {
        ArgumentNullException.ThrowIfNull(denoiser);
        ArgumentNullException.ThrowIfNull(scheduler);
        ArgumentNullException.ThrowIfNull(seeds);
        if (seeds.Count == 0) throw new ArgumentException("At least one seed is needed.", nameof(seeds));

        var generators = seeds.Select(s => new Generator(s, CPU)).ToArray();
        try
        {
            using var noGrad = no_grad();
            // x_T ~ N(0, I) (DDPM algorithm 2, line 1), one stream per image.
            Tensor x = NextNoise(generators, imageShape, device);
            var timesteps = scheduler.Timesteps;
            for (int i = 0; i < timesteps.Count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int t = timesteps[i];
                Tensor next;
                using (var scope = NewDisposeScope())
                {
                    var tt = full(new long[] { seeds.Count }, t, dtype: int64, device: device);
                    var eps = denoiser(x, tt);
                    var z = scheduler.NeedsNoise ? NextNoise(generators, imageShape, device) : null;
                    next = scheduler.Step(eps, t, x, z).MoveToOuterDisposeScope();
                }
                x.Dispose();
                x = next;
                progress?.Report(new SamplingProgress(i + 1, timesteps.Count, t, batchIndex, batchCount));
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
