using Microsoft.ML.Diffusion.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Models;

[TestClass]
public class PaddedConv2dTests
{
    [TestMethod]
    [DataRow(1, 32, 3, 1)]      // few inputs: a matrix product over the unfolded patches
    [DataRow(3, 40, 3, 1)]
    [DataRow(2, 5, 1, 1)]
    [DataRow(32, 1, 3, 1)]      // few outputs: a matrix product per tap, shifted and summed
    [DataRow(40, 3, 3, 1)]
    [DataRow(4, 4, 3, 1)]
    [DataRow(40, 3, 1, 1)]
    [DataRow(3, 8, 3, 2)]
    [DataRow(8, 24, 1, 1)]
    public void EqualsTheConvolutionAndItsGradientsComputedInFloat64(int cin, int cout, int k, int stride)
    {
        manual_seed(2);
        using var conv = new PaddedConv2d(cin, cout, k, stride);
        CollectionAssert.AreEqual(new long[] { cout, cin, k, k }, conv.Weight.shape);
        using var x = randn(new long[] { 2, cin, 12, 12 }, requires_grad: true);
        using var y = conv.forward(x);
        // The reference runs in float64, which libtorch computes without oneDNN (whose float32 kernels are the
        // reason for PaddedConv2d).
        using var w = conv.Weight.detach().to(float64).requires_grad_(true);
        using var b = conv.Bias.detach().to(float64).requires_grad_(true);
        using var x2 = x.detach().to(float64).requires_grad_(true);
        using var reference = nn.functional.conv2d(x2, w, b, strides: new long[] { stride, stride }, padding: new long[] { k / 2, k / 2 });
        CollectionAssert.AreEqual(reference.shape, y.shape);
        Assert.IsTrue(y.to(float64).allclose(reference, rtol: 1e-4, atol: 1e-4));

        using var g = randn(y.shape);
        (y * g).sum().backward();
        (reference * g.to(float64)).sum().backward();
        Assert.IsTrue(x.grad!.to(float64).allclose(x2.grad!, rtol: 1e-4, atol: 1e-4), "input gradient");
        Assert.IsTrue(conv.Weight.grad!.to(float64).allclose(w.grad!, rtol: 1e-4, atol: 1e-3), "weight gradient");
        Assert.IsTrue(conv.Bias.grad!.to(float64).allclose(b.grad!, rtol: 1e-4, atol: 1e-3), "bias gradient");
    }

    [TestMethod]
    [DataRow(2, 8)]
    [DataRow(8, 1)]
    [DataRow(3, 3)]
    public void GivesTheSameBitsWhetherOrNotTheWeightsRequireGradients(int cin, int cout)
    {
        // A trained model's parameters require gradients, the same model loaded from a zip does not; both must sample the same
        // images, so the matrix-product paths may not let that flag pick another summation order.
        manual_seed(4);
        using var trained = new PaddedConv2d(cin, cout, 3);
        using var loaded = new PaddedConv2d(cin, cout, 3);
        using (no_grad())
        {
            loaded.Weight.copy_(trained.Weight);
            loaded.Bias.copy_(trained.Bias);
        }
        foreach (var p in loaded.parameters()) p.requires_grad_(false);
        using var x = randn(3, cin, 10, 10);
        using var noGrad = no_grad();
        using var a = trained.forward(x);
        using var b = loaded.forward(x);
        Assert.IsTrue(a.equal(b).all().item<bool>(), $"max diff {(a - b).abs().max().item<float>()}");
    }
}
