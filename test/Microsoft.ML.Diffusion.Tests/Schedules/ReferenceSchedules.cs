namespace Microsoft.ML.Diffusion.Tests.Schedules;

/// <summary>
/// Independent float64 re-statements of the paper formulas, used to compute expected values in tests
/// (deliberately not sharing code with the library).
/// </summary>
internal static class ReferenceSchedules
{
    /// <summary>DDPM section 4: beta_t linear from 1e-4 to 0.02 (T points, both ends included).</summary>
    public static double[] LinearBetas(int T)
    {
        var b = new double[T];
        for (int i = 0; i < T; i++)
        {
            b[i] = T == 1 ? 1e-4 : 1e-4 + (0.02 - 1e-4) * i / (T - 1);
        }

        return b;
    }

    /// <summary>Improved DDPM eq. 17 with s = 0.008 and betas clipped at 0.999.</summary>
    public static double[] CosineBetas(int T)
    {
        static double F(double u) => Math.Cos((u + 0.008) / 1.008 * Math.PI / 2) * Math.Cos((u + 0.008) / 1.008 * Math.PI / 2);
        var b = new double[T];
        for (int t = 1; t <= T; t++)
        {
            double abar = F((double)t / T) / F(0);
            double abarPrev = F((double)(t - 1) / T) / F(0);
            b[t - 1] = Math.Min(1 - abar / abarPrev, 0.999);
        }

        return b;
    }

    /// <summary>DDPM eq. 4: alpha_bar_t = prod_{s &lt;= t} (1 - beta_s).</summary>
    public static double[] AlphaBars(double[] betas)
    {
        var a = new double[betas.Length];
        double p = 1;
        for (int i = 0; i < betas.Length; i++)
        {
            p *= 1 - betas[i];
            a[i] = p;
        }

        return a;
    }

    public static double AlphaBarOrOne(double[] alphaBars, int t) => t < 0 ? 1.0 : alphaBars[t];
}
