using System.Text.Json.Nodes;

namespace Microsoft.ML.Diffusion.Tests.Cli;

/// <summary><c>evaluate --resume-dir</c>: the generated images are kept per batch, an interrupted or extended evaluation
/// reuses them and reads the same figures, and images of other settings are refused.</summary>
[TestClass]
public sealed class CliEvaluateResumeTests
{
    [TestMethod]
    public void ResumeDir_ReusesBatches_GivesTheSameDistances_AndRefusesOtherSettings()
    {
        string dir = TestData.TempDirectory("cli-evaluate-resume");
        try
        {
            string cache = Path.Combine(dir, "images"), plain = Path.Combine(dir, "plain.json"), cached = Path.Combine(dir, "cached.json");
            string[] common = { "evaluate", "--count", "12", "--sampler", "ddim", "--steps", "2", "--batch-size", "5" };
            CliOnnxTests.RunOk([.. common, "--json", plain]);
            CliOnnxTests.RunOk([.. common, "--json", cached, "--resume-dir", cache]);
            var batches = Directory.GetFiles(cache, "images-*.bin").Select(Path.GetFileName).Order().ToArray();
            CollectionAssert.AreEqual(new[] { "images-000000-0005.bin", "images-000005-0005.bin", "images-000010-0002.bin" }, batches);
            double fd = Fd(plain);
            Assert.AreEqual(fd, Fd(cached), 1e-9, "the batches written to disk are the images the plain run scored");

            // An interrupted run: the middle batch is missing and is made again; a batch that is there is read, not made again
            // (changed on purpose here, so reading it changes the figure).
            File.Delete(Path.Combine(cache, "images-000005-0005.bin"));
            CliOnnxTests.RunOk([.. common, "--json", cached, "--resume-dir", cache]);
            Assert.AreEqual(fd, Fd(cached), 1e-9, "a batch made again is the same batch");
            string first = Path.Combine(cache, "images-000000-0005.bin");
            byte[] bytes = File.ReadAllBytes(first);
            for (int i = bytes.Length - 4 * 784; i < bytes.Length; i += 4) BitConverter.GetBytes(0.5f).CopyTo(bytes, i);
            File.WriteAllBytes(first, bytes);
            CliOnnxTests.RunOk([.. common, "--json", cached, "--resume-dir", cache]);
            Assert.AreNotEqual(fd, Fd(cached), "the batch on disk is read back, not generated again");

            var (code, error) = CliOnnxTests.Run("evaluate", "--count", "12", "--sampler", "ddim", "--steps", "3", "--batch-size", "5", "--resume-dir", cache);
            Assert.AreEqual(1, code, error);
            StringAssert.Contains(error, "--resume-dir");
            StringAssert.Contains(error, "steps = 2, not 3");
            File.WriteAllBytes(first, new byte[] { 1, 0 });
            (code, error) = CliOnnxTests.Run([.. common, "--resume-dir", cache]);
            Assert.AreEqual(1, code, error);
            StringAssert.Contains(error, "images-000000-0005.bin");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static double Fd(string json) => JsonNode.Parse(File.ReadAllText(json))!["frechet_distance"]!.GetValue<double>();
}
