using Microsoft.ML.Diffusion.Schedules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models") of order 2 in
/// data-prediction form with B(h) = e^h - 1 ("bh2"), as diffusers' UniPCMultistepScheduler with solver_order 2, solver_type "bh2" and
/// predict_x0: at each loop position the corrector UniC refines the sample the previous step predicted, using the network's output
/// at that sample (no extra network call), then the predictor UniP steps on. Deterministic; good samples in 5-10 network calls.
/// </summary>
/// <remarks>
/// <para>Notation (<see cref="VpMultistepScheduler"/>): alpha_i, sigma_i, lambda_i of loop position i; m_i = x_theta at position i;
/// for a step from s (position k) to t (position k + 1): h = lambda_t - lambda_s, hh = -h, phi1 = e^{hh} - 1, B = e^{hh} - 1 (bh2),
/// g1 = phi1/hh - 1, g2 = g1/hh - 1/2, b_1 = g1 / B, b_2 = 2 g2 / B.</para>
/// <para>UniP-p (predictor), x_t = (sigma_t/sigma_s) x_s - alpha_t phi1 m_s - alpha_t B rho_p D_1, with D_1 = (m_{s-1} - m_s)/r_1,
/// r_1 = (lambda_{s-1} - lambda_s)/h and rho_p = 1/2 at order 2 (the term is absent at order 1, which is DDIM).</para>
/// <para>UniC-p (corrector) at position k + 1, once m_t is known: x_t^c = (sigma_t/sigma_s) x_s - alpha_t phi1 m_s - alpha_t B
/// (rho_1 D_1 + rho_c (m_t - m_s)), of the order of the predictor step it corrects: order 1, rho_c = 1/2 (no D_1); order 2, (rho_1, rho_c)
/// solves [[1, 1], [r_1, 1]] rho = (b_1, b_2) with D_1 and r_1 of the position before s.</para>
/// <para>Orders: the first step is first order (no earlier prediction); the last step is first order with lower_order_final (diffusers:
/// order min(2, steps left)) and always when it lands on sigma = 0, where the update is m_s itself (diffusers would divide by an infinite
/// step there). A step between equal levels (h = 0: Karras sigmas with final_sigmas_type "sigma_min") leaves the sample unchanged. The
/// last step's prediction is not corrected (that would need another network call).</para>
/// </remarks>
internal sealed class UniPcScheduler : VpMultistepScheduler
{
    // Multistep state, owned here outside any dispose scope: m_{i-1} and m_{i-2}, the (corrected) sample x_{i-1} the last predictor
    // step started from, and that step's order.
    private Tensor? _m1;
    private Tensor? _m2;
    private Tensor? _lastSample;
    private int _lastOrder;

    /// <summary>Creates the sampler with diffusers' options (<see cref="MultistepSettings"/>), visiting all T timesteps until
    /// <see cref="VpMultistepScheduler.SetTimesteps"/> is called.</summary>
    /// <param name="schedule">The forward-process schedule the model was trained with.</param>
    /// <param name="settings">Spacing or Karras/Lu levels, prediction, clipping or thresholding, final level, lower_order_final.</param>
    public UniPcScheduler(DiffusionSchedule schedule, MultistepSettings settings)
        : base(schedule, settings)
    {
    }

    /// <summary>The name in messages and in the sampler registry.</summary>
    public const string DisplayName = "UniPC (bh2)";

    /// <inheritdoc/>
    public override string Name => DisplayName;

    /// <summary>False: an ODE solver.</summary>
    public override bool NeedsNoise => false;

    /// <inheritdoc/>
    protected override void ClearHistory()
    {
        _m1?.Dispose();
        _m2?.Dispose();
        _lastSample?.Dispose();
        _m1 = _m2 = _lastSample = null;
        _lastOrder = 0;
    }

    /// <summary>Corrects the sample with this position's prediction (UniC), then predicts the next (UniP); see the class remarks.</summary>
    protected override SchedulerOutput Update(int index, Tensor modelOutput, Tensor sample, Tensor? noise, bool withX0)
    {
        bool hasHistory = Compatible(_m1, sample) && Compatible(_lastSample, sample);
        bool toData = Level(index + 1).Sigma == 0;
        int order = toData || (Settings.LowerOrderFinal && IsLast(index)) || !hasHistory ? 1 : 2;

        Tensor xPrev, x0, corrected;
        using (var scope = NewDisposeScope())
        {
            x0 = DataPrediction(modelOutput, sample, index);                           // m_i
            var x = hasHistory ? Corrector(index, x0, sample) : sample;                // x_i^c (UniC), or x_i at the start of a loop
            xPrev = toData ? x0 : Predictor(index, x, x0, order);                      // x_{i+1} (UniP); m_i itself at sigma = 0
            xPrev.MoveToOuterDisposeScope();
            corrected = ReferenceEquals(x, sample) ? sample.clone() : x;
            corrected.DetachFromDisposeScope();
            if (!toData)
            {
                x0.DetachFromDisposeScope();
            }
        }

        if (toData)
        {
            corrected.Dispose();
            return new SchedulerOutput(xPrev, xPrev);
        }

        var predicted = withX0 ? x0.clone() : null!;
        // Keep m_i, m_{i-1} and x_i^c for the next position's corrector and predictor.
        _m2?.Dispose();
        _lastSample?.Dispose();
        _m2 = hasHistory ? _m1 : null;
        if (!hasHistory)
        {
            _m1?.Dispose();
        }

        _m1 = x0;
        _lastSample = corrected;
        _lastOrder = order;
        return new SchedulerOutput(xPrev, predicted);
    }

    /// <summary>UniP-p from position <paramref name="index"/> (sample <paramref name="x"/>, prediction <paramref name="m0"/>) to the next.</summary>
    private Tensor Predictor(int index, Tensor x, Tensor m0, int order)
    {
        var (_, sigmaS, lambdaS) = Level(index);
        var (alphaT, sigmaT, lambdaT) = Level(index + 1);
        double h = lambdaT - lambdaS;
        if (h == 0)
        {
            return x.clone();                                                          // no change of level, no change of sample
        }

        double hh = -h;                                                                // data prediction: hh = -h
        double phi1 = Expm1(hh);                                                       // h phi_1(h) = e^{hh} - 1
        double bh = Expm1(hh);                                                         // B(h) = e^{hh} - 1 (bh2)
        // x_t = (sigma_t/sigma_s) x - alpha_t phi1 m_s (the first-order part: DDIM / DPM-Solver++1).
        var xt = SchedulerCore.Combine(sigmaT / sigmaS, x, -alphaT * phi1, m0);
        if (order == 2)
        {
            // - alpha_t B rho_p D_1, rho_p = 1/2, D_1 = (m_{s-1} - m_s)/r_1, r_1 = (lambda_{s-1} - lambda_s)/h.
            double r1 = (Level(index - 1).Lambda - lambdaS) / h;
            double c = -alphaT * bh * 0.5 / r1;
            SchedulerCore.AddScaled_(xt, c, _m1!);
            SchedulerCore.AddScaled_(xt, -c, m0);
        }

        return xt;
    }

    /// <summary>UniC-p at position <paramref name="index"/>: corrects <paramref name="sample"/> (predicted from the previous position)
    /// with this position's prediction <paramref name="mt"/>, at the order of the step that predicted it.</summary>
    private Tensor Corrector(int index, Tensor mt, Tensor sample)
    {
        var (_, sigmaS, lambdaS) = Level(index - 1);
        var (alphaT, sigmaT, lambdaT) = Level(index);
        double h = lambdaT - lambdaS;
        if (h == 0)
        {
            return sample;
        }

        double hh = -h;
        double phi1 = Expm1(hh);
        double bh = Expm1(hh);
        double g1 = phi1 / hh - 1.0;                                                   // h phi_k recursion, k = 1
        double b1 = g1 / bh;                                                           // b_1 = g1 * 1! / B
        double g2 = g1 / hh - 0.5;                                                     // k = 2: g1/hh - 1/2!
        double b2 = g2 * 2.0 / bh;                                                     // b_2 = g2 * 2! / B
        double rho1 = 0.0, rhoC = 0.5;                                                 // order 1: rho_c = 1/2
        double r1 = 1.0;
        if (_lastOrder == 2 && Compatible(_m2, sample))
        {
            r1 = (Level(index - 2).Lambda - lambdaS) / h;                              // r_1 = (lambda_{s-1} - lambda_s)/h
            rho1 = (b1 - b2) / (1.0 - r1);                                             // [[1, 1], [r_1, 1]] (rho_1, rho_c) = (b_1, b_2)
            rhoC = b1 - rho1;
        }

        // x_t^c = (sigma_t/sigma_s) x_s - alpha_t phi1 m_s - alpha_t B (rho_1 (m_{s-1} - m_s)/r_1 + rho_c (m_t - m_s)).
        double cD1 = -alphaT * bh * rho1 / r1;
        double cMt = -alphaT * bh * rhoC;
        var xc = SchedulerCore.Combine(sigmaT / sigmaS, _lastSample!, -alphaT * phi1 - cD1 - cMt, _m1!);
        SchedulerCore.AddScaled_(xc, cMt, mt);
        if (rho1 != 0.0)
        {
            SchedulerCore.AddScaled_(xc, cD1, _m2!);
        }

        return xc;
    }

    /// <summary>e^x - 1 without cancellation for small |x| (Kahan's formula), -1 at -infinity.</summary>
    internal static double Expm1(double x)
    {
        double u = Math.Exp(x);
        if (u == 1.0 || double.IsPositiveInfinity(u))
        {
            return u == 1.0 ? x : u;
        }

        double um1 = u - 1.0;
        return um1 == -1.0 ? -1.0 : um1 * x / Math.Log(u);
    }
}
