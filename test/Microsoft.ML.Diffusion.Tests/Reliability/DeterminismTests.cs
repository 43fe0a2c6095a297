namespace Microsoft.ML.Diffusion.Tests.Reliability;

/// <summary>The same MLContext seed and data give bit-identical trained weights on the CPU: run after run, and in another process.</summary>
[TestClass]
public class DeterminismTests
{
    private static IDataView Data(MLContext ml) => ml.Data.LoadFromEnumerable(TestData.Squares(24).ToList());

    [TestMethod]
    public void TheMLContextSeedFixesTheWeightsRunAfterRun()
    {
        using var threads = ReliabilityKit.OneTorchThread();
        byte[] Train(int contextSeed)
        {
            var ml = new MLContext(seed: contextSeed);
            var options = TestData.TinyOptions(steps: 3);
            options.Seed = null;   // taken from the MLContext
            using var model = ml.Generative.Diffusion(options).Fit(Data(ml));
            return ReliabilityKit.WeightBytes(ml, model);
        }
        var first = Train(7);
        for (int run = 0; run < 2; run++)
            CollectionAssert.AreEqual(first, Train(7), $"run {run + 2} with MLContext seed 7 differs from the first");
        CollectionAssert.AreNotEqual(first, Train(8), "another MLContext seed should give other weights");
    }

    [TestMethod]
    [TestCategory("Fault")]
    public void AnotherProcessTrainsTheSameWeights()
    {
        using var threads = ReliabilityKit.OneTorchThread();
        string dir = TestData.TempDirectory("diffusion-determinism");
        try
        {
            string path = Path.Combine(dir, "child.zip");
            using (var child = ReliabilityKit.StartSamples($"train-synthetic --count 24 --max-steps 6 --out \"{path}\" --threads 1"))
            {
                string output = child.StandardOutput.ReadToEnd() + child.StandardError.ReadToEnd();
                Assert.IsTrue(child.WaitForExit(180_000), "the child hung");
                Assert.AreEqual(0, child.ExitCode, output);
            }
            var ml = new MLContext(seed: 1);
            using var here = ml.Generative.Diffusion(TestData.TinyOptions(steps: 6)).Fit(Data(ml));
            var childWeights = ReliabilityKit.Entries(File.ReadAllBytes(path)).Single(e => e.Key.EndsWith(ReliabilityKit.WeightsEntry)).Value;
            CollectionAssert.AreEqual(ReliabilityKit.WeightBytes(ml, here), childWeights, "the child process trained other weights");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
