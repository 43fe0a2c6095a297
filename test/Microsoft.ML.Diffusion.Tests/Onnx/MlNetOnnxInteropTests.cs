using Microsoft.ML.Data;
using static Microsoft.ML.Diffusion.Tests.Onnx.OnnxTestNetworks;
using static Microsoft.ML.Diffusion.Tests.Onnx.UNetOnnxExportTests;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Onnx;

/// <summary>
/// ML.NET interop: ML.NET's own <c>mlContext.Transforms.ApplyOnnxModel</c> (Microsoft.ML.OnnxTransformer) scores an exported
/// network on IDataView columns (x_t as a vector column, t, class labels) and gives the TorchSharp network's output within 1e-4.
/// </summary>
[TestClass]
public class MlNetOnnxInteropTests
{
    private sealed class NetworkInput
    {
        [VectorType(64)] public float[] x_t { get; set; } = Array.Empty<float>();
        [VectorType(1)] public float[] t { get; set; } = Array.Empty<float>();
        [VectorType(1)] public long[] class_labels { get; set; } = Array.Empty<long>();
    }

    private sealed class NetworkOutput
    {
        [VectorType(64)] public float[] prediction { get; set; } = Array.Empty<float>();
    }

    [TestMethod]
    public void ApplyOnnxModelScoresTheExportedNetwork()
    {
        using var scope = NewDisposeScope();
        using var model = RandomModel(Tiny(numClasses: 3));
        var inputs = Inputs(model, 3);
        var expected = TorchForward(model, inputs);
        string path = Path.Combine(Path.GetTempPath(), $"unet-mlnet-{Guid.NewGuid():N}.onnx");
        try
        {
            model.ExportOnnx(path);
            var x = inputs.X.data<float>().ToArray();
            var t = inputs.T.to_type(float32).data<float>().ToArray();
            var y = inputs.Labels!.data<long>().ToArray();
            var rows = Enumerable.Range(0, 3).Select(i => new NetworkInput
            {
                x_t = x.AsSpan(64 * i, 64).ToArray(), t = new[] { t[i] }, class_labels = new[] { y[i] },
            }).ToList();

            var ml = new MLContext(seed: 1);
            var data = ml.Data.LoadFromEnumerable(rows);
            // ML.NET scores one row at a time: the graph's symbolic batch dimension is 1 for each row, no shape dictionary needed.
            var pipeline = ml.Transforms.ApplyOnnxModel(new[] { "prediction" }, new[] { "x_t", "t", "class_labels" }, path);
            using var transformer = pipeline.Fit(data);
            var scored = ml.Data.CreateEnumerable<NetworkOutput>(transformer.Transform(data), reuseRowObject: false).ToList();

            Assert.AreEqual(3, scored.Count);
            var actual = tensor(scored.SelectMany(r => r.prediction).ToArray(), new long[] { 3, 1, 8, 8 });
            float diff = MaxDifference(expected, actual);
            Assert.IsTrue(diff <= Tolerance, $"max |ML.NET onnx - torch| = {diff}");
        }
        finally
        {
            File.Delete(path);
        }
    }
}
