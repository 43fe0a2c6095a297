using Microsoft.ML.Diffusion.Evaluation;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Evaluation;

[TestClass]
public class FeatureStatisticsTests
{
    [TestMethod]
    public void FrechetDistanceOfIdenticalSetsIsZero()
    {
        manual_seed(1);
        using var a = randn(500, 16);
        double fd = FeatureStatistics.FrechetDistance(a, a);
        Assert.AreEqual(0.0, fd, 1e-6);
    }

    [TestMethod]
    public void FrechetDistanceOfGaussiansEqualsTheClosedForm()
    {
        // Samples whose empirical mean and covariance are exactly diagonal-Gaussian ones: whitened noise, scaled and shifted.
        manual_seed(2);
        int n = 400, d = 6;
        double[] muA = { 0, 1, -1, 2, 0.5, 0 }, sdA = { 1, 2, 0.5, 1, 3, 1.5 };
        double[] muB = { 1, 1, 0, -2, 0.5, 3 }, sdB = { 2, 1, 0.5, 0.25, 1, 1 };
        using var a = Exact(n, d, muA, sdA);
        using var b = Exact(n + 100, d, muB, sdB);
        // For diagonal covariances: sum (mu_a - mu_b)^2 + (sd_a - sd_b)^2.
        double expected = 0;
        for (int i = 0; i < d; i++)
            expected += Math.Pow(muA[i] - muB[i], 2) + Math.Pow(sdA[i] - sdB[i], 2);
        Assert.AreEqual(expected, FeatureStatistics.FrechetDistance(a, b), 1e-8 * expected);
    }

    [TestMethod]
    public void FrechetDistanceOfCorrelatedGaussiansEqualsTheFloat64Formula()
    {
        // Full covariances: Tr((S_a S_b)^(1/2)) from the eigenvalues of S_a S_b (real and non-negative) computed independently.
        manual_seed(3);
        using var a = randn(300, 5, dtype: float64).matmul(randn(5, 5, dtype: float64)) + 1;
        using var b = randn(200, 5, dtype: float64).matmul(randn(5, 5, dtype: float64));
        using var ca = cov(a.t());
        using var cb = cov(b.t());
        using var prod = ca.matmul(cb);
        using var eig = linalg.eigvals(prod);
        using var re = real(eig).clamp_min(0).sqrt();
        using var dm = a.mean(new long[] { 0 }) - b.mean(new long[] { 0 });
        double expected = (dm * dm).sum().item<double>() + ca.trace().item<double>() + cb.trace().item<double>() - 2 * re.sum().item<double>();
        Assert.AreEqual(expected, FeatureStatistics.FrechetDistance(a, b), 1e-8 * Math.Abs(expected));
        // Float32 input gives the same value (computed in float64 inside).
        using var a32 = a.to(float32);
        Assert.AreEqual(FeatureStatistics.FrechetDistance(a32.to(float64), b), FeatureStatistics.FrechetDistance(a32, b.to(float32)), 1e-3 * expected);
    }

    [TestMethod]
    public void FrechetDistanceIsSymmetric()
    {
        manual_seed(4);
        using var a = randn(200, 8) * 2 + 0.5;
        using var b = randn(300, 8).matmul(randn(8, 8));
        double ab = FeatureStatistics.FrechetDistance(a, b), ba = FeatureStatistics.FrechetDistance(b, a);
        Assert.IsTrue(ab > 0);
        Assert.AreEqual(ab, ba, 1e-9 * ab);
    }

    [TestMethod]
    public void FrechetDistanceHandlesSingularCovariances()
    {
        // More dimensions than samples and constant columns (as ReLU features have): finite and non-negative.
        manual_seed(5);
        using var a = nn.functional.relu(randn(20, 64));
        using var b = nn.functional.relu(randn(30, 64) + 0.3);
        double fd = FeatureStatistics.FrechetDistance(a, b);
        Assert.IsTrue(double.IsFinite(fd) && fd > 0, $"fd = {fd}");
    }

    [TestMethod]
    public void KidOfIdenticalDistributionsIsNearZeroAndOfShiftedSetsPositive()
    {
        manual_seed(6);
        using var a = randn(1000, 16);
        using var b = randn(1000, 16);
        using var shifted = randn(1000, 16) + 0.5;
        double same = FeatureStatistics.KernelInceptionDistance(a, b);
        double diff = FeatureStatistics.KernelInceptionDistance(a, shifted);
        Assert.IsTrue(Math.Abs(same) < 0.01, $"same = {same}");
        Assert.IsTrue(diff > 0.1 && diff > 20 * Math.Abs(same), $"diff = {diff}, same = {same}");
    }

    [TestMethod]
    public void KidEqualsANaiveFloat64Recomputation()
    {
        manual_seed(7);
        using var a = randn(7, 3);
        using var b = randn(5, 3) + 0.2;
        double[,] x = ToArray(a), y = ToArray(b);
        int n = 7, m = 5, d = 3;
        double K(double[,] p, int i, double[,] q, int j)
        {
            double dot = 0;
            for (int k = 0; k < d; k++) dot += p[i, k] * q[j, k];
            return Math.Pow(dot / d + 1, 3);
        }
        double sxx = 0, syy = 0, sxy = 0;
        for (int i = 0; i < n; i++) for (int j = 0; j < n; j++) if (i != j) sxx += K(x, i, x, j);
        for (int i = 0; i < m; i++) for (int j = 0; j < m; j++) if (i != j) syy += K(y, i, y, j);
        for (int i = 0; i < n; i++) for (int j = 0; j < m; j++) sxy += K(x, i, y, j);
        double expected = sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m);
        Assert.AreEqual(expected, FeatureStatistics.KernelInceptionDistance(a, b), 1e-9 * Math.Max(1, Math.Abs(expected)));
    }

    [TestMethod]
    public void RejectsMismatchedShapes()
    {
        using var a = zeros(10, 4);
        using var b = zeros(10, 5);
        using var c = zeros(10);
        Assert.ThrowsExactly<ArgumentException>(() => FeatureStatistics.FrechetDistance(a, b));
        Assert.ThrowsExactly<ArgumentException>(() => FeatureStatistics.KernelInceptionDistance(a, c));
    }

    private static Tensor Exact(int n, int d, double[] mu, double[] sd)
    {
        // Rows with empirical mean 0 and (unbiased) covariance I: centre, then whiten with the inverse Cholesky factor.
        using var z = randn(n, d, dtype: float64);
        using var c = z - z.mean(new long[] { 0 });
        using var cv = c.t().matmul(c) / (n - 1);
        using var l = linalg.cholesky(cv);
        using var lInvT = linalg.inv(l).t();
        using var w = c.matmul(lInvT);
        using var sdT = tensor(sd, float64);
        using var muT = tensor(mu, float64);
        return w * sdT + muT;
    }

    private static double[,] ToArray(Tensor t)
    {
        var data = t.to(float64).data<double>().ToArray();
        int rows = (int)t.shape[0], cols = (int)t.shape[1];
        var r = new double[rows, cols];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) r[i, j] = data[i * cols + j];
        return r;
    }
}
