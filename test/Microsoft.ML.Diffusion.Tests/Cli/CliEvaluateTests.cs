using System.Text.Json.Nodes;

namespace Microsoft.ML.Diffusion.Tests.Cli;

/// <summary><c>evaluate --baseline</c>: the distance of real training images to the same test images, the floor a model is
/// judged against at that count.</summary>
[TestClass]
public sealed class CliEvaluateTests
{
    [TestMethod]
    public void Baseline_ScoresTrainingImages_FarBelowAnUntrainedSampler()
    {
        string dir = TestData.TempDirectory("cli-evaluate");
        try
        {
            string json = Path.Combine(dir, "evaluate.json");
            // One DDIM step gives blurred noise; 128 training images are real garments: their distance to the test images is far smaller.
            CliOnnxTests.RunOk("evaluate", "--count", "128", "--sampler", "ddim", "--steps", "1", "--baseline", "--json", json);
            var doc = JsonNode.Parse(File.ReadAllText(json))!;
            double generated = doc["frechet_distance"]!.GetValue<double>(), floor = doc["train_images_frechet_distance"]!.GetValue<double>();
            Assert.IsTrue(floor > 0, $"training images are not the test images: the distance is {floor}, expected > 0");
            Assert.IsTrue(floor * 5 < generated, $"floor {floor} against {generated} for 1 DDIM step");
            Assert.IsNotNull(doc["train_images_kid"]);

            CliOnnxTests.RunOk("evaluate", "--count", "8", "--steps", "1", "--json", json);
            Assert.IsNull(JsonNode.Parse(File.ReadAllText(json))!["train_images_frechet_distance"], "without --baseline no floor is written");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
