using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Tests.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>
/// Float64 pieces that the multistep solver tests (DPM-Solver++ Karras, SDE-DPM-Solver++, UniPC) recompute the papers' updates with,
/// and an oracle loop.
/// </summary>
internal static class MultistepReference
{
    /// <summary>alpha_bar of the linear schedule (1e-4 .. 0.02, T = 1000), recomputed in float64.</summary>
    public static readonly double[] AlphaBarLinear = ReferenceSchedules.AlphaBars(ReferenceSchedules.LinearBetas(1000));

    /// <summary>(alpha, sigma, lambda) of a level alpha_bar: sqrt(abar), sqrt(1 - abar), log(alpha/sigma); (1, 0, +inf) for abar = 1.</summary>
    public static (double Alpha, double Sigma, double Lambda) Level(double abar) =>
        abar >= 1 ? (1.0, 0.0, double.PositiveInfinity) : (Math.Sqrt(abar), Math.Sqrt(1 - abar), 0.5 * Math.Log(abar / (1 - abar)));

    /// <summary>x_theta = (x - sigma eps)/alpha (DDPM eq. 4 solved for x_0).</summary>
    public static double[] DataPrediction(double[] x, double[] eps, double abar)
    {
        var (alpha, sigma, _) = Level(abar);
        return x.Select((xi, k) => (xi - sigma * eps[k]) / alpha).ToArray();
    }

    public static double[] Values(Tensor t)
    {
        using var a = t.to_type(ScalarType.Float64);
        return a.data<double>().ToArray();
    }

    public static Tensor T32(double[] v) => tensor(v.Select(x => (float)x).ToArray(), new long[] { 1, 1, 2, 3 });

    public static void AssertClose(double[] expected, Tensor actual, double tol, string what = "")
    {
        var got = Values(actual);
        Assert.HasCount(expected.Length, got);
        for (int i = 0; i < got.Length; i++)
            Assert.AreEqual(expected[i], got[i], tol * Math.Max(1, Math.Abs(expected[i])), $"{what} element {i}");
    }

    /// <summary>
    /// A full loop by loop position, as <c>DiffusionSampler</c> runs it, with an oracle network that returns the exact epsilon (or x_0,
    /// or v) of a known x_0 at the level the scheduler assigns each position (<see cref="VpMultistepScheduler.AlphaBars"/>). Returns
    /// max |x - x_0|.
    /// </summary>
    public static double OracleError(VpMultistepScheduler sch, int steps, long seed, PredictionType prediction = PredictionType.Epsilon)
    {
        sch.SetTimesteps(steps);
        using var gen = new Generator((ulong)seed);
        using var x0 = randn(new long[] { 2, 1, 8, 8 }, generator: gen).clamp(-1, 1);
        var x = randn(new long[] { 2, 1, 8, 8 }, generator: gen);
        try
        {
            for (int i = 0; i < sch.Timesteps.Count; i++)
            {
                using var scope = NewDisposeScope();
                double abar = sch.AlphaBars[i];
                var eps = (x - x0 * Math.Sqrt(abar)) / Math.Sqrt(1 - abar);
                var output = prediction switch
                {
                    PredictionType.Epsilon => eps,
                    PredictionType.Sample => x0.clone(),
                    _ => eps * Math.Sqrt(abar) - x0 * Math.Sqrt(1 - abar),
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
