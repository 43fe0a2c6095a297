using Microsoft.ML.Diffusion.Evaluation;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Evaluation;

[TestClass]
public class FeatureClassifierTests
{
    [TestMethod]
    public void ShapesOfLogitsAndFeatures()
    {
        manual_seed(1);
        using var net = new FeatureClassifier();
        net.eval();
        using var x = rand(3, 1, 28, 28) * 2 - 1;
        using var noGrad = no_grad();
        using var logits = net.forward(x);
        using var features = net.Features(x);
        CollectionAssert.AreEqual(new long[] { 3, FeatureClassifier.ClassCount }, logits.shape);
        CollectionAssert.AreEqual(new long[] { 3, FeatureClassifier.FeatureSize }, features.shape);
        Assert.IsTrue(features.isfinite().all().item<bool>());
        Assert.IsTrue((features >= 0).all().item<bool>()); // after the ReLU
        Assert.ThrowsExactly<ArgumentException>(() => net.Features(zeros(2, 1, 32, 32)));
    }

    [TestMethod]
    public void SavedWeightsLoadIntoANewNetwork()
    {
        manual_seed(2);
        string path = Path.Combine(Path.GetTempPath(), $"classifier-{Guid.NewGuid():N}.bin");
        try
        {
            using var a = new FeatureClassifier();
            a.save(path);
            using var b = new FeatureClassifier();
            b.load(path);
            a.eval(); b.eval();
            using var x = rand(2, 1, 28, 28) * 2 - 1;
            using var noGrad = no_grad();
            using var ya = a.forward(x);
            using var yb = b.forward(x);
            Assert.IsTrue(ya.allclose(yb));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
