using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests;

[TestClass]
public class SmokeTests
{
    [TestMethod]
    public void LibTorchLoadsAndComputes()
    {
        using var x = ones(2, 3);
        Assert.AreEqual(6f, x.sum().item<float>());
    }
}
