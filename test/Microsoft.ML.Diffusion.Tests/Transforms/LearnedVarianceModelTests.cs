using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Persistence;

namespace Microsoft.ML.Diffusion.Tests.Transforms;

/// <summary>A model trained with learned variance (Improved DDPM): 2C output channels, the variance saved with the model,
/// identical DDPM and DDIM images after save/load.</summary>
[TestClass]
public class LearnedVarianceModelTests
{
    private static TestModel _fixture = null!;
    private static MLContext _ml => _fixture.Ml;
    private static IDataView _data => _fixture.Data;
    private static DiffusionModel _model => _fixture.Model;
    private static DiffusionModel _fixedModel = null!;
    private static string _dir => _fixture.Directory;

    [ClassInitialize]
    public static void Fit(TestContext _)
    {
        _fixture = TestModel.Train("diffusion-learned-variance", steps: 6, o => o.Variance = VarianceType.Learned);
        _fixedModel = _ml.Generative.Diffusion(TestData.TinyOptions(steps: 1)).Fit(_data);
    }

    [ClassCleanup]
    public static void Cleanup()
    {
        _fixedModel?.Dispose();
        _fixture?.Dispose();
    }

    private static List<byte[]> Pixels(IEnumerable<MLImage> images) => images.Select(TestData.Pixels).ToList();

    [TestMethod]
    public void LearnedVarianceModelHasTwiceTheOutputChannels()
    {
        Assert.AreEqual(VarianceType.Learned, _model.Config.Variance);
        Assert.AreEqual(2, _model.Config.Network.OutChannels);
        Assert.AreEqual(VarianceType.FixedSmall, _fixedModel.Config.Variance);
        Assert.AreEqual(1, _fixedModel.Config.Network.OutChannels);
        // Only the output convolution (3x3, from the base width 8) grows: 8 * 9 weights and 1 bias per extra channel.
        Assert.AreEqual(8 * 9 + 1, _model.ParameterCount - _fixedModel.ParameterCount);
    }

    [TestMethod]
    public void LearnedVarianceModelSavesAndLoads()
    {
        string path = Path.Combine(_dir, "learned.zip");
        _ml.Model.Save(_model, _data.Schema, path);
        using var loaded = (DiffusionModel)new MLContext().Model.Load(path, out _);
        Assert.AreEqual(VarianceType.Learned, loaded.Config.Variance);
        Assert.AreEqual(_model.ParameterCount, loaded.ParameterCount);

        var ddpm = new SamplerOptions { Sampler = SamplerKind.Ddpm, Steps = 10, Seed = 3 };
        var ddim = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 5, Eta = 0f, Seed = 3 };
        var dpm = new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlus, Steps = 5, Seed = 3 };
        foreach (var options in new[] { ddpm, ddim, dpm })
        {
            var before = Pixels(_model.Generate(3, options));
            var after = Pixels(loaded.Generate(3, options));
            for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(before[i], after[i], $"{options.Sampler}, image {i}");
        }

        // The saved variance reaches the DDPM sampler: read as FixedLarge, the same weights give other images.
        using var asLarge = new DiffusionModel(new MLContext(), loaded.Config with { Variance = VarianceType.FixedLarge }, loaded.Network, loaded.Device, ownsNetwork: false);
        var learned = Pixels(loaded.Generate(2, ddpm));
        var large = Pixels(asLarge.Generate(2, ddpm));
        Assert.IsFalse(learned.Zip(large).All(p => p.First.SequenceEqual(p.Second)), "DDPM uses the learned variance");
        // DDIM ignores the variance.
        CollectionAssert.AreEqual(Pixels(loaded.Generate(1, ddim))[0], Pixels(asLarge.Generate(1, ddim))[0]);
    }

    [TestMethod]
    public void ConfigWithoutVarianceReadsAsFixedSmall()
    {
        string json = _fixedModel.Config.ToJson();
        Assert.IsFalse(json.Contains("\"Variance\":\"Learned\"", StringComparison.Ordinal));
        var node = System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject();
        node.Remove("Variance");
        Assert.AreEqual(VarianceType.FixedSmall, DiffusionModelConfig.FromJson(node.ToJsonString()).Variance);
        Assert.AreEqual(VarianceType.Learned, DiffusionModelConfig.FromJson(_model.Config.ToJson()).Variance);
    }
}
