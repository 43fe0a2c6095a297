using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion.Tests.Transforms;

/// <summary>
/// The Euler, Heun and Euler ancestral samplers through <see cref="DiffusionModel"/> on a self-conditioned model (continuous timesteps
/// reach the network and the self-conditioning estimate): images do not depend on the batching, the deterministic ones interpolate,
/// and classifier guidance is refused by name.
/// </summary>
[TestClass]
public class SigmaSpaceSamplerModelTests
{
    private static TestModel _fixture = null!;
    private static DiffusionModel _model => _fixture.Model;

    [ClassInitialize]
    public static void Fit(TestContext _) => _fixture = TestModel.Train("diffusion-sigma", steps: 4, o => o.SelfConditioning = true);

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    private static List<byte[]> Pixels(IEnumerable<MLImage> images) => images.Select(TestData.Pixels).ToList();

    [TestMethod]
    [DataRow(SamplerKind.EulerKarras)]
    [DataRow(SamplerKind.HeunKarras)]
    [DataRow(SamplerKind.EulerAncestral)]
    public void ImagesDoNotDependOnTheSamplerBatchSize(SamplerKind kind)
    {
        var one = new SamplerOptions { Sampler = kind, Steps = 4, Seed = 5, BatchSize = 1 };
        var three = new SamplerOptions { Sampler = kind, Steps = 4, Seed = 5, BatchSize = 3 };
        var a = Pixels(_model.Generate(4, one));
        var b = Pixels(_model.Generate(4, three));
        for (int i = 0; i < 4; i++) CollectionAssert.AreEqual(a[i], b[i], $"{kind}, image {i}");
    }

    [TestMethod]
    public void DeterministicSamplersInterpolate_TheAncestralOneIsRefused()
    {
        var euler = new SamplerOptions { Sampler = SamplerKind.EulerKarras, Steps = 3 };
        var frames = _model.Interpolate(1, 2, 3, euler);
        var first = Pixels(frames.Take(1));
        var direct = Pixels(_model.Generate(1, new SamplerOptions { Sampler = SamplerKind.EulerKarras, Steps = 3, Seed = 1 }));
        CollectionAssert.AreEqual(direct[0], first[0]);
        var e = Assert.ThrowsExactly<ArgumentException>(() => _model.Interpolate(1, 2, 3, new SamplerOptions { Sampler = SamplerKind.EulerAncestral, Steps = 3 }));
        StringAssert.Contains(e.Message, "Euler ancestral");
    }
}
