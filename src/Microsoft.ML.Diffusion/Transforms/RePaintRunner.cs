using Microsoft.ML.Diffusion.Sampling;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion;

/// <summary>Runs <see cref="RePaintSampler"/> with a model's network, schedule, prediction type and variance, in batches.</summary>
internal static class RePaintRunner
{
    /// <summary>
    /// Fills the unknown pixels of <paramref name="known"/> [N, C, H, W] (CPU, [-1, 1]) where <paramref name="mask"/> [N, 1, H, W]
    /// is 0, batch by batch with a fresh DDPM scheduler and denoiser state each. Returns [N, C, H, W] on the CPU.
    /// </summary>
    /// <param name="model">The diffusion model.</param>
    /// <param name="options">Steps, jump length, resamplings, batch size, progress and cancellation.</param>
    /// <param name="known">The known images.</param>
    /// <param name="mask">1 keeps, 0 fills.</param>
    /// <param name="seeds">One seed per image.</param>
    /// <param name="network">Replaces the model's network when set (tests count calls through it).</param>
    public static Tensor Run(DiffusionModel model, RePaintOptions options, Tensor known, Tensor mask, IReadOnlyList<uint> seeds,
        Func<Tensor, Tensor, Tensor>? network = null)
    {
        options.Validate(model.Timesteps);
        var defaults = model.DefaultSampler;
        var samplerOptions = new SamplerOptions
        {
            Sampler = SamplerKind.Ddpm, Steps = options.ResolveSteps(model.Timesteps),
            ClipSample = defaults.ClipSample, DynamicThresholding = defaults.DynamicThresholding,
        };
        int count = seeds.Count;
        int batches = (count + options.BatchSize - 1) / options.BatchSize;
        var parts = new List<Tensor>();
        try
        {
            for (int b = 0; b < batches; b++)
            {
                int start = b * options.BatchSize, n = Math.Min(options.BatchSize, count - start);
                var chunk = seeds.Skip(start).Take(n).ToArray();
                var scheduler = SchedulerFactory.Create(model.Schedule, samplerOptions, model.Config.Prediction, model.Config.Variance);
                var (denoise, state) = model.NewBatchDenoiser(network);
                try
                {
                    using var k = known.narrow(0, start, n);
                    using var m = mask.narrow(0, start, n);
                    parts.Add(RePaintSampler.Sample(denoise, scheduler, k, m, chunk, options.JumpLength, options.Resamplings, model.Device,
                        options.Progress, options.CancellationToken, b, batches));
                }
                finally
                {
                    state?.Dispose();
                    (scheduler as IDisposable)?.Dispose();
                }
            }

            return parts.Count == 1 ? parts[0] : cat(parts, 0);
        }
        finally
        {
            if (parts.Count > 1) foreach (var p in parts) p.Dispose();
        }
    }
}
