using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Evaluation;

/// <summary>
/// Distances between two sets of feature vectors (rows), as used to compare generated images with real ones:
/// the Frechet distance of Gaussians fitted to the features (FID, Heusel et al. 2017) and the kernel distance
/// (KID, Binkowski et al. 2018). Both are computed in float64 on the CPU.
/// </summary>
public static class FeatureStatistics
{
    /// <summary>
    /// The Frechet distance between Gaussians fitted to <paramref name="featuresA"/> [N, D] and <paramref name="featuresB"/> [M, D]:
    /// ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) with unbiased covariances S. The trace of the matrix square root
    /// is computed as the sum of sqrt(max(eig(S_a^(1/2) S_b S_a^(1/2)), 0)) (a symmetric matrix with the same eigenvalues
    /// as S_a S_b), with S_a^(1/2) from the eigendecomposition of S_a; this stays real and finite for singular covariances.
    /// </summary>
    public static double FrechetDistance(Tensor featuresA, Tensor featuresB)
    {
        CheckPair(featuresA, featuresB, 2);
        using var scope = NewDisposeScope();
        var a = featuresA.detach().to(float64).cpu();
        var b = featuresB.detach().to(float64).cpu();
        var (muA, covA) = MeanAndCovariance(a);
        var (muB, covB) = MeanAndCovariance(b);
        var diff = muA - muB;
        double meanTerm = (diff * diff).sum().item<double>();
        var (evals, evecs) = linalg.eigh(covA);
        var sqrtA = evecs.matmul(diag(evals.clamp_min(0).sqrt())).matmul(evecs.t());
        var m = sqrtA.matmul(covB).matmul(sqrtA);
        m = (m + m.t()) / 2;
        double traceSqrt = linalg.eigvalsh(m).clamp_min(0).sqrt().sum().item<double>();
        double traces = covA.trace().item<double>() + covB.trace().item<double>();
        return meanTerm + traces - 2 * traceSqrt;
    }

    /// <summary>
    /// The kernel inception distance: the unbiased estimate of the squared maximum mean discrepancy (MMD^2) between
    /// <paramref name="featuresA"/> [N, D] and <paramref name="featuresB"/> [M, D] with the polynomial kernel
    /// k(x, y) = (x.y / D + 1)^3. Unlike the Frechet distance it has no bias in the sample size (it can be slightly negative).
    /// </summary>
    public static double KernelInceptionDistance(Tensor featuresA, Tensor featuresB)
    {
        CheckPair(featuresA, featuresB, 2);
        using var scope = NewDisposeScope();
        var x = featuresA.detach().to(float64).cpu();
        var y = featuresB.detach().to(float64).cpu();
        long n = x.shape[0], m = y.shape[0], d = x.shape[1];
        Tensor Kernel(Tensor p, Tensor q) => (p.matmul(q.t()) / d + 1).pow(3);
        var kxx = Kernel(x, x);
        var kyy = Kernel(y, y);
        var kxy = Kernel(x, y);
        double sxx = (kxx.sum() - kxx.diagonal().sum()).item<double>() / (n * (n - 1.0));
        double syy = (kyy.sum() - kyy.diagonal().sum()).item<double>() / (m * (m - 1.0));
        double sxy = kxy.sum().item<double>() / ((double)n * m);
        return sxx + syy - 2 * sxy;
    }

    private static (Tensor Mean, Tensor Covariance) MeanAndCovariance(Tensor x)
    {
        var mu = x.mean(new long[] { 0 });
        var centred = x - mu;
        return (mu, centred.t().matmul(centred) / (x.shape[0] - 1));
    }

    private static void CheckPair(Tensor a, Tensor b, int minRows)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.dim() != 2 || b.dim() != 2)
            throw new ArgumentException($"Features must be 2-D [N, D]; got [{string.Join(", ", a.shape)}] and [{string.Join(", ", b.shape)}].");
        if (a.shape[1] != b.shape[1])
            throw new ArgumentException($"Feature sizes differ: {a.shape[1]} and {b.shape[1]}.");
        if (a.shape[0] < minRows || b.shape[0] < minRows)
            throw new ArgumentException($"Each set needs at least {minRows} rows; got {a.shape[0]} and {b.shape[0]}.");
    }
}
