using Microsoft.ML.Diffusion.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Sampling;

/// <summary>
/// RePaint (Lugmayr et al. 2022): inpainting with an unconditional diffusion model. At every reverse step the known
/// pixels are drawn from the forward process q(x_{t-1} | x_0) and the unknown ones from the model's p(x_{t-1} | x_t), and
/// the two are joined by the mask (eq. 8); the <see cref="RePaintSchedule"/> jumps back up (eq. 9) so that the filled
/// region is resampled in harmony with the known one. Like <see cref="DiffusionSampler"/>, each image draws all its noise
/// from its own generator seeded with its seed, so an image does not depend on the batch it is in.
/// </summary>
internal static class RePaintSampler
{
    /// <summary>
    /// Fills the unknown pixels of <paramref name="known"/>. Returns x_0 [B, C, H, W] in [-1, 1] on the CPU, equal to
    /// <paramref name="known"/> wherever <paramref name="mask"/> keeps the pixel.
    /// </summary>
    /// <param name="denoiser">The network: (x_t [B,C,H,W], t [B] int64) to the output the scheduler expects.</param>
    /// <param name="scheduler">A scheduler with the RePaint capability (DDPM, or DDIM) with its timesteps set; its steps are the RePaint levels.</param>
    /// <param name="known">The image to fill, [B, C, H, W] in [-1, 1] (values under the filled region are ignored).</param>
    /// <param name="mask">[B, 1, H, W] or [B, C, H, W]: 1 (&gt;= 0.5) keeps the pixel of <paramref name="known"/>, 0 fills it.</param>
    /// <param name="seeds">One seed per image.</param>
    /// <param name="jumpLength">RePaint's j: levels jumped back at each resampling.</param>
    /// <param name="resamplings">RePaint's r: times each stretch is denoised; 1 disables resampling.</param>
    /// <param name="device">Where the network runs.</param>
    /// <param name="progress">One report per schedule entry (denoising or undo step); TotalSteps is the schedule length.</param>
    /// <param name="cancellationToken">Checked before every entry.</param>
    /// <param name="batchIndex">Reported in <see cref="SamplingProgress.BatchIndex"/>.</param>
    /// <param name="batchCount">Reported in <see cref="SamplingProgress.BatchCount"/>.</param>
    public static Tensor Sample(
        Func<Tensor, Tensor, Tensor> denoiser,
        IDiffusionScheduler scheduler,
        Tensor known,
        Tensor mask,
        IReadOnlyList<uint> seeds,
        int jumpLength,
        int resamplings,
        Device device,
        IProgress<SamplingProgress>? progress = null,
        CancellationToken cancellationToken = default,
        int batchIndex = 0,
        int batchCount = 0)
    {
        ArgumentNullException.ThrowIfNull(denoiser);
        ArgumentNullException.ThrowIfNull(scheduler);
        ArgumentNullException.ThrowIfNull(known);
        ArgumentNullException.ThrowIfNull(mask);
        ArgumentNullException.ThrowIfNull(seeds);
        if (!scheduler.Capabilities.HasFlag(SchedulerCapabilities.RePaint))
            throw new ArgumentException(
                $"RePaint jumps back in time, which {scheduler.Name} cannot follow (a multistep solver or a sigma-space sampler); " +
                $"RePaint supports: {SamplerRegistry.NamesWith(SchedulerCapabilities.RePaint)}.", nameof(scheduler));
        if (known.dim() != 4 || known.shape[0] != seeds.Count)
            throw new ArgumentException($"known must be [B, C, H, W] with B = {seeds.Count} (one image per seed); got [{string.Join(", ", known.shape)}].", nameof(known));
        if (mask.dim() != 4 || mask.shape[0] != known.shape[0] || (mask.shape[1] != 1 && mask.shape[1] != known.shape[1])
            || mask.shape[2] != known.shape[2] || mask.shape[3] != known.shape[3])
            throw new ArgumentException(
                $"mask must be [B, 1, H, W] or [B, C, H, W] like known [{string.Join(", ", known.shape)}]; got [{string.Join(", ", mask.shape)}].", nameof(mask));

        var timesteps = scheduler.Timesteps;
        int steps = timesteps.Count;
        var schedule = RePaintSchedule.Jump(steps, jumpLength, resamplings);
        var imageShape = known.shape.Skip(1).ToArray();
        var schedule0 = scheduler.Schedule;

        // Level k of the schedule is the sampler's timestep Timesteps[steps - 1 - k]; level -1 is x_0 (alpha_bar = 1).
        int Level(int k) => k < 0 ? -1 : timesteps[steps - 1 - k];

        var generators = seeds.Select(s => new Generator(s, CPU)).ToArray();
        Tensor? x = null;
        try
        {
            using var noGrad = no_grad();
            Tensor x0Known, keep;
            using (var setup = NewDisposeScope())
            {
                x0Known = known.detach().to_type(float32).to(device).clone().MoveToOuterDisposeScope();
                keep = (mask.detach().to(device) >= 0.5).expand_as(x0Known).contiguous().MoveToOuterDisposeScope();
            }

            using var _x0 = x0Known;
            using var _keep = keep;

            // x_T ~ N(0, I) (RePaint algorithm 1, line 1), one stream per image.
            x = NextNoise(generators, imageShape, device);
            int previous = schedule[0] + 1;
            for (int i = 0; i < schedule.Length; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int k = schedule[i];
                int t;
                Tensor next;
                using (var scope = NewDisposeScope())
                {
                    if (k < previous)
                    {
                        // One reverse step from level k: x_t -> x_{t-1}.
                        t = Level(k);
                        var tt = full(new long[] { seeds.Count }, t, dtype: int64, device: device);
                        var output = denoiser(x, tt);
                        var z = scheduler.NeedsNoise ? NextNoise(generators, imageShape, device) : null;
                        // x_{t-1}^unknown ~ p_theta(x_{t-1} | x_t) (eq. 8, second line), the model's own step.
                        var unknown = scheduler.Step(output, t, x, z);
                        int tPrev = scheduler.PreviousTimestep(t);
                        // x_{t-1}^known ~ N(sqrt(alpha_bar_{t-1}) x_0, (1 - alpha_bar_{t-1}) I) (eq. 8, first line); x_0 itself at the end.
                        Tensor knownPart;
                        if (tPrev < 0)
                        {
                            knownPart = x0Known;
                        }
                        else
                        {
                            double abarPrev = schedule0.AlphaBar(tPrev);
                            var eps = NextNoise(generators, imageShape, device);
                            knownPart = SchedulerCore.Combine(Math.Sqrt(abarPrev), x0Known, Math.Sqrt(1.0 - abarPrev), eps);
                        }

                        // x_{t-1} = m * x^known + (1 - m) * x^unknown (eq. 8, third line), with a 0/1 mask: exact selection.
                        next = where(keep, knownPart, unknown).MoveToOuterDisposeScope();
                    }
                    else
                    {
                        // Undo step (eq. 9) back up to the previous entry's level: x_t ~ N(sqrt(1 - beta_t) x_{t-1}, beta_t I), with
                        // beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} between the two visited levels (exact for strided timesteps).
                        int from = Level(previous - 1);
                        t = Level(previous);
                        double alpha = schedule0.AlphaBar(t) / schedule0.AlphaBar(from);
                        var z = NextNoise(generators, imageShape, device);
                        next = SchedulerCore.Combine(Math.Sqrt(alpha), x, Math.Sqrt(1.0 - alpha), z).MoveToOuterDisposeScope();
                    }
                }

                x.Dispose();
                x = next;
                previous = k;
                progress?.Report(new SamplingProgress(i + 1, schedule.Length, t, batchIndex, batchCount));
            }

            var result = x.cpu();
            if (!ReferenceEquals(result, x)) x.Dispose();
            x = null;
            return result;
        }
        finally
        {
            x?.Dispose();
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
