using Microsoft.ML.Diffusion.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Models;

[TestClass]
public class NearestUpsampleConvTests
{
    /// <summary>The reference: nearest 2x upsampling, then the 3x3 convolution with padding 1, in float64.</summary>
    private static Tensor Reference(Tensor x, Tensor w, Tensor b) =>
        nn.functional.conv2d(nn.functional.interpolate(x, scale_factor: new[] { 2.0, 2.0 }, mode: InterpolationMode.Nearest), w, b,
                             padding: new long[] { 1, 1 });

    [TestMethod]
    [DataRow(32, 32, 7, 5)]
    [DataRow(48, 32, 4, 6)]
    public void EqualsUpsamplingThenConvolvingWithItsGradients(int cin, int cout, int h, int w)
    {
        manual_seed(5);
        using var x = randn(new long[] { 2, cin, h, w }, requires_grad: true);
        using var weight = (randn(cout, cin, 3, 3) * 0.2).requires_grad_(true);
        using var bias = randn(new long[] { cout }, requires_grad: true);
        using var y = NearestUpsampleConv.Forward(x, weight, bias);
        using var x64 = x.detach().to(float64).requires_grad_(true);
        using var w64 = weight.detach().to(float64).requires_grad_(true);
        using var b64 = bias.detach().to(float64).requires_grad_(true);
        using var reference = Reference(x64, w64, b64);
        CollectionAssert.AreEqual(new long[] { 2, cout, 2 * h, 2 * w }, y.shape);
        Assert.IsTrue(y.to(float64).allclose(reference, rtol: 1e-5, atol: 1e-5), $"max diff {(y.to(float64) - reference).abs().max().item<double>()}");

        using var g = randn(y.shape);
        (y * g).sum().backward();
        (reference * g.to(float64)).sum().backward();
        Assert.IsTrue(x.grad!.to(float64).allclose(x64.grad!, rtol: 1e-4, atol: 1e-4), $"input gradient: max diff {(x.grad!.to(float64) - x64.grad!).abs().max().item<double>()} of {x64.grad!.abs().max().item<double>()}");
        Assert.IsTrue(weight.grad!.to(float64).allclose(w64.grad!, rtol: 1e-4, atol: 1e-3), "weight gradient");
        Assert.IsTrue(bias.grad!.to(float64).allclose(b64.grad!, rtol: 1e-4, atol: 1e-3), "bias gradient");
    }

    [TestMethod]
    public void TheUpsampleBlockComputesNearestUpsamplingThenItsConvolution()
    {
        manual_seed(6);
        using var block = new Upsample(32, 6);
        var weight = block.named_parameters().Single(p => p.name.EndsWith("weight")).parameter;
        var bias = block.named_parameters().Single(p => p.name.EndsWith("bias")).parameter;
        using var x = randn(2, 32, 6, 6);
        using var noGrad = no_grad();
        using var y = block.forward(x, randn(2, 4));
        using var reference = Reference(x.to(float64), weight.to(float64), bias.to(float64));
        Assert.IsTrue(y.to(float64).allclose(reference, rtol: 1e-5, atol: 1e-5));
    }

    [TestMethod]
    public void RejectsAKernelThatIsNot3x3()
    {
        using var x = randn(1, 4, 3, 3);
        var e = Assert.ThrowsExactly<ArgumentException>(() => NearestUpsampleConv.Forward(x, randn(4, 4, 5, 5), null));
        StringAssert.Contains(e.Message, "[4, 4, 5, 5]");
    }
}
