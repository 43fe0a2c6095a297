using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Tests.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>
/// Float64 recomputations, written out from the papers, that the sigma-space sampler tests compare against, and an oracle loop.
/// </summary>
internal static class SigmaSpaceReference
{
    public const int T = 1000;

    /// <summary>The linear schedule's training sigmas, sqrt((1 - abar)/abar), from the reference alpha_bar.</summary>
    public static double[] Sigmas()
    {
        var abar = ReferenceSchedules.AlphaBars(ReferenceSchedules.LinearBetas(T));
        return abar.Select(a => Math.Sqrt((1 - a) / a)).ToArray();
    }

    /// <summary>EDM eq. 5 with rho = 7 between sigma_0 and sigma_{T-1}, then 0.</summary>
    public static double[] Karras(int n)
    {
        var s = Sigmas();
        double min = s[0], max = s[T - 1];
        var result = new double[n + 1];
        for (int i = 0; i < n; i++)
            result[i] = Math.Pow(Math.Pow(max, 1 / 7.0) + (double)i / (n - 1) * (Math.Pow(min, 1 / 7.0) - Math.Pow(max, 1 / 7.0)), 7);
        return result;
    }

    /// <summary>The continuous timestep of sigma: linear in log sigma between the bracketing training timesteps.</summary>
    public static double TimestepOf(double sigma)
    {
        var s = Sigmas();
        int k = 0;
        while (k < T - 2 && s[k + 1] <= sigma) k++;
        return k + (Math.Log(sigma) - Math.Log(s[k])) / (Math.Log(s[k + 1]) - Math.Log(s[k]));
    }

    public static double[] Values(Tensor t) => t.to_type(float64).data<double>().ToArray();

    public static Tensor Tensor(double[] values, long[] shape) => TorchSharp.torch.tensor(values, dtype: float64).reshape(shape);

    /// <summary>
    /// Runs a full loop as <c>DiffusionSampler</c> does (start at InitNoiseSigma x noise, scale the input, step by loop position) with an
    /// oracle network: the true noise (or x_0, or v) for the known <paramref name="x0"/> at the VP input it sees. Returns max |x - x0|.
    /// </summary>
    public static double OracleError(SigmaSpaceScheduler sch, PredictionType prediction, long seed)
    {
        using var gen = new Generator((ulong)seed);
        using var x0 = randn(new long[] { 2, 1, 8, 8 }, generator: gen).clamp(-1, 1);
        var x = randn(new long[] { 2, 1, 8, 8 }, generator: gen).mul(sch.InitNoiseSigma);
        try
        {
            for (int i = 0; i < sch.Timesteps.Count; i++)
            {
                using var scope = NewDisposeScope();
                double sigma = sch.LoopSigmas[i];
                double abar = 1 / (sigma * sigma + 1);
                var input = sch.ScaleModelInput(x, i);
                var eps = (input - x0 * Math.Sqrt(abar)) / Math.Sqrt(1 - abar);          // DDPM eq. 4 solved for eps
                var output = prediction switch
                {
                    PredictionType.Epsilon => eps,
                    PredictionType.Sample => x0.clone(),
                    _ => eps * Math.Sqrt(abar) - x0 * Math.Sqrt(1 - abar),           // v = alpha eps - sigma x0
                };
                var noise = sch.NeedsNoise ? randn(x.shape, generator: gen) : null;
                var next = sch.StepAt(i, output, x, noise).PrevSample.MoveToOuterDisposeScope();
                x.Dispose();
                x = next;
            }

            using var err = (x - x0).abs().max();
            return err.item<float>();
        }
        finally
        {
            x.Dispose();
        }
    }
}
