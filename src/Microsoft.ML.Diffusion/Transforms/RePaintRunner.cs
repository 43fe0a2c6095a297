using Microsoft.ML.Diffusion.Sampling;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Transforms;

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
    /// <param name="network">Replaces the model's network when set (tests count calls through it); otherwise the network runs on
    /// <see cref="RePaintOptions.Engine"/>.</param>
    /// <param name="encoderInput">Latent models only: the image the known latent is encoded from (default: <paramref name="known"/>).</param>
    /// <param name="cellKnownIfAnyPixel">Latent models only: a latent cell is known when any of its f x f pixels is known
    /// (default false: when all of them are).</param>
    /// <param name="log">A transform's progress log of this batch (see <see cref="RePaintProgressLog"/>); it then replaces
    /// options.Progress, which it forwards to.</param>
    public static Tensor Run(DiffusionModel model, RePaintOptions options, Tensor known, Tensor mask, IReadOnlyList<uint> seeds,
        Func<Tensor, Tensor, Tensor>? network = null, Tensor? encoderInput = null, bool cellKnownIfAnyPixel = false,
        RePaintProgressLog? log = null)
    {
        model.RequireDdpmObjective("RePaint inpainting");
        options.Validate(model.Timesteps);
        if (log is not null)
        {
            var logged = (RePaintOptions)options.CloneOptions();
            logged.Progress = log;
            options = logged;
        }
        if (model.Latent is { } latent)
            return RunLatent(model, latent, options, known, mask, seeds, network, encoderInput ?? known, cellKnownIfAnyPixel);
        return RunBatches(model, options, known, mask, seeds, network);
    }

    /// <summary>
    /// RePaint in the latent space of a latent diffusion model: the known image is encoded (z = s E(x)), the mask is
    /// downsampled to the latent grid (a cell is known when all, or with <paramref name="anyPixel"/> any, of its f x f pixels
    /// are), RePaint fills the unknown cells, the result is decoded (x = D(z / s)) and the known pixels are re-imposed in pixel
    /// space, so they appear unchanged in the output as with a pixel-space model.
    /// </summary>
    private static Tensor RunLatent(DiffusionModel model, LatentSpace latent, RePaintOptions options, Tensor known, Tensor mask,
        IReadOnlyList<uint> seeds, Func<Tensor, Tensor, Tensor>? network, Tensor encoderInput, bool anyPixel)
    {
        using var scope = NewDisposeScope();
        var autoencoder = model.Autoencoder!;
        int f = latent.DownsamplingFactor;
        var keep = (mask.to_type(float32) >= 0.5).to_type(float32);
        if (keep.shape[1] != 1) keep = keep.amin(new long[] { 1 }, keepdim: true);   // a pixel is known when all its channels are
        var kernel = new long[] { f, f };
        var latentKeep = anyPixel
            ? nn.functional.max_pool2d(keep, kernel, kernel)                 // any known pixel in the cell
            : -nn.functional.max_pool2d(-keep, kernel, kernel);              // all pixels of the cell known (min-pool)
        var zKnown = Sampling.LatentCodec.ToLatent(autoencoder, encoderInput, latent.ScaleFactor);
        var z0 = RunBatches(model, options, zKnown, latentKeep, seeds, network);
        var decoded = Sampling.LatentCodec.ToImage(autoencoder, z0, latent.ScaleFactor, options.Engine);
        return where(keep.expand_as(decoded) > 0.5, known.to_type(float32), decoded).MoveToOuterDisposeScope();
    }

    private static Tensor RunBatches(DiffusionModel model, RePaintOptions options, Tensor known, Tensor mask, IReadOnlyList<uint> seeds,
        Func<Tensor, Tensor, Tensor>? network)
    {
        var defaults = model.Pipeline.ForSampling(model.DefaultSampler);
        var samplerOptions = new SamplerOptions
        {
            Sampler = SamplerKind.Ddpm, Steps = options.ResolveSteps(model.Timesteps),
            ClipSample = defaults.ClipSample, DynamicThresholding = defaults.DynamicThresholding,
        };
        // ONNX Runtime: the model's session (made once, reused); it splits a self-conditioned network's concat(x_t, x0_hat).
        if (network is null && options.Engine == InferenceEngine.OnnxRuntime)
        {
            var onnx = model.Pipeline.OnnxNetwork();
            network = (x, t) => onnx.Forward(x, t, null);   // no class label (the null class of a class-conditional model)
        }
        int count = seeds.Count;
        int batches = (count + options.BatchSize - 1) / options.BatchSize;
        var parts = new List<Tensor>();
        try
        {
            for (int b = 0; b < batches; b++)
            {
                int start = b * options.BatchSize, n = Math.Min(options.BatchSize, count - start);
                var chunk = seeds.Skip(start).Take(n).ToArray();
                var scheduler = SchedulerFactory.Create(model.Schedule, samplerOptions, model.Config.Prediction, model.Config.Variance, model.Config.Objective);
                var (denoise, state) = model.Pipeline.BatchDenoiser(network);
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
