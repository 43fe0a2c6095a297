using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Tests.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Schedulers;

/// <summary>
/// Full sampling loops with an oracle "model" that returns the exact epsilon implied by x_t and a known x_0:
/// eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t). Every scheduler must then land on x_0.
/// </summary>
[TestClass]
public class OracleSamplingTests
{
    private static readonly long[] Shape = { 2, 1, 8, 8 };

    private static double[] ReferenceAlphaBars(NoiseSchedule kind, int T) => kind switch
    {
        NoiseSchedule.Linear => ReferenceSchedules.AlphaBars(ReferenceSchedules.LinearBetas(T)),
        NoiseSchedule.Cosine => ReferenceSchedules.AlphaBars(ReferenceSchedules.CosineBetas(T)),
        _ => throw new NotSupportedException(),
    };

    /// <summary>Runs the loop; returns max |x - x0| at the end and the largest deviation of the oracle epsilon from the first step's.</summary>
    private static (double FinalError, double MaxEpsDrift) Run(IDiffusionScheduler sch, double[] abar, int steps, long seed)
    {
        sch.SetTimesteps(steps);
        using var gen = new TorchSharp.torch.Generator((ulong)seed);
        using var x0 = randn(Shape, generator: gen).clamp(-1, 1);
        var x = randn(Shape, generator: gen);
        Tensor? eps0 = null;
        double drift = 0;
        try
        {
            foreach (int t in sch.Timesteps)
            {
                using var scope = NewDisposeScope();
                // Oracle model: the epsilon that x_t and the known x_0 imply (DDPM eq. 4 solved for eps).
                var eps = (x - x0 * Math.Sqrt(abar[t])) / Math.Sqrt(1 - abar[t]);
                // The starting noise is not exactly sqrt(abar) x0 + sqrt(1 - abar) eps, so measure drift from the first step's epsilon.
                eps0 ??= eps.clone().MoveToOuterDisposeScope();
                drift = Math.Max(drift, (eps - eps0).abs().max().item<float>());
                var noise = sch.NeedsNoise ? randn(Shape, generator: gen) : null;
                var next = sch.Step(eps, t, x, noise).MoveToOuterDisposeScope();
                x.Dispose();
                x = next;
            }

            using var err = (x - x0).abs().max();
            return (err.item<float>(), drift);
        }
        finally
        {
            x.Dispose();
            eps0?.Dispose();
        }
    }

    [TestMethod]
    public void Ddpm_T100_AllSteps_RecoversX0()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Cosine, 100);
        var (err, _) = Run(new DdpmScheduler(s), ReferenceAlphaBars(NoiseSchedule.Cosine, 100), 100, 1);
        Assert.IsLessThan(1e-3, err);
    }

    [TestMethod]
    public void Ddpm_T100_Strided20_RecoversX0()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Cosine, 100);
        var (err, _) = Run(new DdpmScheduler(s), ReferenceAlphaBars(NoiseSchedule.Cosine, 100), 20, 2);
        Assert.IsLessThan(1e-3, err);
        var (errLarge, _) = Run(new DdpmScheduler(s, variance: VarianceType.FixedLarge), ReferenceAlphaBars(NoiseSchedule.Cosine, 100), 20, 3);
        Assert.IsLessThan(1e-3, errLarge);
    }

    [TestMethod]
    public void Ddim_Eta0_10Steps_RecoversX0_AlongTheDeterministicPath()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        var (err, drift) = Run(new DdimScheduler(s, 0f), ReferenceAlphaBars(NoiseSchedule.Linear, 1000), 10, 4);
        Assert.IsLessThan(1e-3, err);
        // With eta = 0 and an exact model, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps0 at every visited t (DDIM eq. 12),
        // so the oracle's epsilon never moves away from the one of the first step.
        Assert.IsLessThan(1e-3, drift);
    }

    [TestMethod]
    public void Ddim_Eta1_10Steps_RecoversX0()
    {
        var s = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        var (err, drift) = Run(new DdimScheduler(s, 1f), ReferenceAlphaBars(NoiseSchedule.Linear, 1000), 10, 5);
        Assert.IsLessThan(1e-3, err);
        Assert.IsGreaterThan(0.1, drift, "eta = 1 injects fresh noise, so the implied epsilon changes");
    }
}
