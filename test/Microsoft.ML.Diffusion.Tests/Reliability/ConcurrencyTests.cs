using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Diffusion.Tests.Reliability;

/// <summary>
/// One loaded model used from 4 threads at once, as PredictionEnginePool does (one PredictionEngine per thread, one shared
/// model), gives the images of sequential calls with the same seeds. The model is safe without a lock: its forward only reads
/// the weights, gradient mode (no_grad) and TorchSharp's dispose scopes are per thread, and every call makes its own
/// scheduler, noise generators and self-conditioning state.
/// </summary>
[TestClass]
public class ConcurrencyTests
{
    private static TestModel _fixture = null!;
    private static MLContext _ml => _fixture.Ml;
    private static DiffusionModel _model = null!;

    [ClassInitialize]
    public static void Setup(TestContext _)
    {
        _fixture = TestModel.Train("diffusion-concurrency", steps: 3);
        string path = Path.Combine(_fixture.Directory, "model.zip");
        _ml.Model.Save(_fixture.Model.WithSampler(new SamplerOptions { Sampler = SamplerKind.Ddpm, Steps = 10 }), _fixture.Data.Schema, path);
        _model = new MLContext().Generative.LoadDiffusionModel(path);   // a loaded model, as a web service has
    }

    [ClassCleanup]
    public static void Cleanup()
    {
        _model.Dispose();
        _fixture.Dispose();
    }

    [TestMethod]
    public void PredictionEnginesOnFourThreadsGiveTheSequentialImages()
    {
        using var torchThreads = ReliabilityKit.OneTorchThread();   // four callers in libtorch at once; one intra-op thread each (fast on 2 shared cores)
        const int threads = 4, perThread = 3;
        var sequentialEngine = _ml.Model.CreatePredictionEngine<SeedRequest, GeneratedRow>(_model);
        var expected = Enumerable.Range(0, threads * perThread)
            .Select(i => TestData.Pixels(sequentialEngine.Predict(new SeedRequest { Seed = (uint)(1000 + i) }).GeneratedImage)).ToList();

        var actual = new byte[threads * perThread][];
        using var start = new Barrier(threads);
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var engine = _ml.Model.CreatePredictionEngine<SeedRequest, GeneratedRow>(_model);   // one engine per thread
            start.SignalAndWait();
            for (int k = 0; k < perThread; k++)
            {
                int i = k * threads + t;   // interleaved seeds
                actual[i] = TestData.Pixels(engine.Predict(new SeedRequest { Seed = (uint)(1000 + i) }).GeneratedImage);
            }
        })).ToList();
        workers.ForEach(w => w.Start());
        workers.ForEach(w => Assert.IsTrue(w.Join(TimeSpan.FromMinutes(3)), "a worker hung"));
        for (int i = 0; i < expected.Count; i++)
            CollectionAssert.AreEqual(expected[i], actual[i], $"seed {1000 + i}: the concurrent image differs from the sequential one");
    }

    [TestMethod]
    public void GenerateWithFourSamplersOnFourThreadsGivesTheSequentialImages()
    {
        using var torchThreads = ReliabilityKit.OneTorchThread();
        var samplers = new[]
        {
            new SamplerOptions { Sampler = SamplerKind.Ddpm, Steps = 10, Seed = 1 },
            new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 8, Eta = 0.5f, Seed = 2 },
            new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlus, Steps = 6, Seed = 3 },
            new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 5, Seed = 4, BatchSize = 1 },
        };
        var expected = samplers.Select(s => _model.Generate(3, s).Select(TestData.Pixels).ToList()).ToList();
        var actual = new List<byte[]>[samplers.Length];
        Parallel.For(0, samplers.Length, new ParallelOptions { MaxDegreeOfParallelism = samplers.Length }, i =>
        {
            for (int round = 0; round < 2; round++)
                actual[i] = _model.Generate(3, samplers[i]).Select(TestData.Pixels).ToList();
        });
        for (int i = 0; i < samplers.Length; i++)
            for (int j = 0; j < 3; j++)
                CollectionAssert.AreEqual(expected[i][j], actual[i][j], $"{samplers[i].Sampler} image {j}");
    }

    private sealed class SeedRequest
    {
        public uint Seed { get; set; }
    }

    private sealed class GeneratedRow
    {
        [ImageType(8, 8)]
        public MLImage GeneratedImage { get; set; } = null!;
    }
}
