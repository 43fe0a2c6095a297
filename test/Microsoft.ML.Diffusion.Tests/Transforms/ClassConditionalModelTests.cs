using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;
using Microsoft.ML.Diffusion.Persistence;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Transforms;

/// <summary>A class-conditional model with classifier-free guidance (Ho &amp; Salimans 2022): labels reach the images,
/// w = 0 is the null label, guidance is one batched forward per step, save/load keeps it, bad labels fail clearly.</summary>
[TestClass]
public class ClassConditionalModelTests
{
    private const int Classes = 25;        // TestData.Squares labels: the square's position, 0..24
    private static TestModel _fixture = null!;
    private static MLContext _ml => _fixture.Ml;
    private static IDataView _data => _fixture.Data;
    private static DiffusionModel _model => _fixture.Model;
    private static string _dir => _fixture.Directory;

    [ClassInitialize]
    public static void Fit(TestContext _) => _fixture = TestModel.Train("diffusion-cfg", steps: 6, o =>
    {
        o.LabelColumnName = "Label";
        o.NumClasses = Classes;
    });

    [ClassCleanup]
    public static void Cleanup() => _fixture.Dispose();

    private static List<byte[]> Pixels(IEnumerable<MLImage> images) => images.Select(TestData.Pixels).ToList();

    private static SamplerOptions Options(SamplerKind kind, float w) => new()
    {
        Sampler = kind, Steps = kind == SamplerKind.Ddpm ? 3 : 4, Seed = 3, GuidanceScale = w, BatchSize = 2,
    };

    private static readonly SamplerKind[] Kinds = { SamplerKind.Ddim, SamplerKind.Ddpm, SamplerKind.DpmSolverPlusPlus };

    [TestMethod]
    public void TheModelIsClassConditional()
    {
        Assert.AreEqual(Classes, _model.NumClasses);
        Assert.AreEqual("Label", _model.LabelColumnName);
        Assert.AreEqual(Classes, _model.Config.Network.NumClasses);
        Assert.AreEqual(0.1f, _model.Config.ConditionDropProbability);
        Assert.AreEqual(1, _model.Config.Network.InChannels, "class conditioning adds no input channels");
        Assert.IsNull(_model.Conditioning);
    }

    [TestMethod]
    public void TheLabelChangesTheImage()
    {
        foreach (var kind in Kinds)
        {
            var o = Options(kind, 1f);
            var a = Pixels(_model.Generate(new[] { 3, 3, 3 }, o));
            var a2 = Pixels(_model.Generate(new[] { 3, 3, 3 }, o));
            var b = Pixels(_model.Generate(new[] { 20, 20, 20 }, o));
            for (int i = 0; i < 3; i++)
            {
                CollectionAssert.AreEqual(a[i], a2[i], $"{kind} image {i}: deterministic");
                CollectionAssert.AreNotEqual(a[i], b[i], $"{kind} image {i}: another class, another image");
            }
        }
    }

    [TestMethod]
    public void GuidanceZeroEqualsTheNullLabelAndGuidanceChangesTheImage()
    {
        var seeds = new uint[] { 4, 5, 6 };
        foreach (var kind in Kinds)
        {
            using var unguided = _model.Pipeline.Run(new SamplingRequest(seeds, Options(kind, 0f)) { Classes = new long[] { 1, 7, 12 } });
            using var nullLabel = _model.Pipeline.Run(new SamplingRequest(seeds, Options(kind, 1f)) { Classes = new long[] { Classes, Classes, Classes } });
            using var noLabels = _model.GenerateTensor(seeds, Options(kind, 1f));
            Assert.IsTrue(unguided.allclose(nullLabel, 0, 0), $"{kind}: w = 0 is the unconditional model");
            Assert.IsTrue(noLabels.allclose(nullLabel, 0, 0), $"{kind}: requests without labels use the null label");
            using var conditional = _model.GenerateTensor(seeds, new[] { 1, 7, 12 }, Options(kind, 1f));
            using var guided = _model.GenerateTensor(seeds, new[] { 1, 7, 12 }, Options(kind, 3f));
            Assert.IsGreaterThan(1e-4f, (guided - conditional).abs().max().item<float>(), $"{kind}: w = 3 differs from w = 1");
            Assert.IsTrue(guided.abs().max().item<float>() <= 1f);
        }
    }

    [TestMethod]
    public void GuidanceRunsOneBatchedForwardPerStep()
    {
        foreach (var kind in Kinds)
        {
            using var m = _model.WithSampler(Options(kind, 1f));
            var batches = new List<long>();
            var inner = m.Pipeline.NetworkForward;
            m.Pipeline.NetworkForward = (x, t, y) =>
            {
                batches.Add(x.shape[0]);
                Assert.AreEqual(x.shape[0], y!.shape[0]);
                return inner(x, t, y);
            };
            var guided = Options(kind, 3f);
            int steps = guided.ResolveSteps(m.Timesteps);
            m.Generate(new[] { 0, 1, 2 }, guided);                      // batches of 2 and 1
            CollectionAssert.AreEqual(Enumerable.Repeat(4L, steps).Concat(Enumerable.Repeat(2L, steps)).ToList(), batches,
                $"{kind}: one forward of 2B per step");
            batches.Clear();
            m.Generate(new[] { 0, 1, 2 }, Options(kind, 1f));
            CollectionAssert.AreEqual(Enumerable.Repeat(2L, steps).Concat(Enumerable.Repeat(1L, steps)).ToList(), batches,
                $"{kind}: w = 1 needs only the conditional branch");
        }
    }

    [TestMethod]
    public void TransformReadsTheLabelColumnAndMatchesGenerate()
    {
        var options = Options(SamplerKind.Ddim, 2f);
        using var m = _model.WithSampler(options);
        var labels = new[] { 5, 0, 24 };
        var requests = _ml.Generative.CreateRequests(3, 3, labels);
        var viaTransform = m.Transform(requests).GetColumn<MLImage>(m.OutputColumnName).Select(TestData.Pixels).ToList();
        var viaGenerate = Pixels(_model.Generate(labels, options));
        for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(viaGenerate[i], viaTransform[i], $"image {i}");

        var engine = _ml.Model.CreatePredictionEngine<LabeledRequest, GeneratedRow>(m);
        using var one = engine.Predict(new LabeledRequest { Seed = 4, Label = 0 });
        CollectionAssert.AreEqual(viaGenerate[1], TestData.Pixels(one.GeneratedImage), "PredictionEngine reads the label too");
    }

    public sealed class LabeledRequest
    {
        public uint Seed { get; set; }
        public int Label { get; set; }
    }

    public sealed class GeneratedRow : IDisposable
    {
        [ImageType(8, 8)]
        public MLImage GeneratedImage { get; set; } = null!;

        public void Dispose() => GeneratedImage?.Dispose();
    }

    [TestMethod]
    public void SaveAndLoadGiveIdenticalImages()
    {
        string path = Path.Combine(_dir, "cfg.zip");
        _ml.Model.Save(_model, _data.Schema, path);
        using var loaded = (DiffusionModel)new MLContext().Model.Load(path, out _);
        Assert.AreEqual(Classes, loaded.NumClasses);
        Assert.AreEqual("Label", loaded.LabelColumnName);
        foreach (var kind in Kinds)
        {
            var o = Options(kind, 3f);
            var before = Pixels(_model.Generate(new[] { 2, 9, 17 }, o));
            var after = Pixels(loaded.Generate(new[] { 2, 9, 17 }, o));
            for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(before[i], after[i], $"{kind} image {i}");
        }
        using var withGuidance = _model.WithSampler(Options(SamplerKind.Ddim, 4f));
        string path2 = Path.Combine(_dir, "cfg-w4.zip");
        _ml.Model.Save(withGuidance, _data.Schema, path2);
        using var loaded2 = (DiffusionModel)new MLContext().Model.Load(path2, out _);
        Assert.AreEqual(4f, loaded2.DefaultSampler.GuidanceScale, "the default sampler keeps its guidance scale");
    }

    [TestMethod]
    public void BadLabelsAreRejected()
    {
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _model.Generate(new[] { 0, Classes }));
        StringAssert.Contains(e.Message, $"0..{Classes - 1}");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _model.Generate(new[] { -1 }));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.CreateRequests(1, 0, new[] { -2 }));
        Assert.ThrowsExactly<ArgumentException>(() => _ml.Generative.CreateRequests(2, 0, new[] { 1 }));
        var requests = _ml.Generative.CreateRequests(2, 0, new[] { 1, 30 });
        var e2 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _model.Transform(requests).GetColumn<MLImage>(_model.OutputColumnName).ToList());
        StringAssert.Contains(e2.Message, "Label column 'Label', row 1: label 30");
        var elsewhere = _ml.Generative.CreateRequests(1, 0, new[] { 1 }, labelColumnName: "Class");
        var e3 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _model.Transform(elsewhere));
        StringAssert.Contains(e3.Message, "'Label'");
        var negative = new SamplerOptions { GuidanceScale = -1f };
        var e4 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _model.Generate(new[] { 1 }, negative));
        StringAssert.Contains(e4.Message, "GuidanceScale");
    }

    [TestMethod]
    public void AnUnconditionalModelRejectsLabelsAndGuidance()
    {
        using var plain = _ml.Generative.Diffusion(TestData.TinyOptions(steps: 1)).Fit(_data);
        Assert.AreEqual(0, plain.NumClasses);
        Assert.IsNull(plain.LabelColumnName);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => plain.Generate(new[] { 1 }));
        StringAssert.Contains(e.Message, "no class conditioning");
        var e2 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => plain.Transform(_ml.Generative.CreateRequests(1, 0, new[] { 1 })));
        StringAssert.Contains(e2.Message, "Column 'Label' holds class labels");
        var e3 = Assert.ThrowsExactly<ArgumentException>(() => plain.Generate(1, new SamplerOptions { GuidanceScale = 3f }));
        StringAssert.Contains(e3.Message, "GuidanceScale");
        // A plain Label column (not made by CreateRequests) passes through, as before.
        Assert.AreEqual(16, plain.Transform(_data).GetColumn<uint>("Label").Count());
    }

    [TestMethod]
    public void TrainerOptionsAndLabelColumnsAreChecked()
    {
        var noCount = TestData.TinyOptions(steps: 1);
        noCount.LabelColumnName = "Label";
        var e = Assert.ThrowsExactly<ArgumentException>(() => _ml.Generative.Diffusion(noCount).Fit(_data));
        StringAssert.Contains(e.Message, "NumClasses");

        var tooFew = TestData.TinyOptions(steps: 1);
        tooFew.LabelColumnName = "Label";
        tooFew.NumClasses = 5;
        var e2 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Diffusion(tooFew).Fit(_data));
        StringAssert.Contains(e2.Message, "Label column 'Label', row");

        var missing = TestData.TinyOptions(steps: 1);
        missing.LabelColumnName = "Class";
        missing.NumClasses = 3;
        var e3 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Diffusion(missing).Fit(_data));
        StringAssert.Contains(e3.Message, "'Class' was not found");

        var badP = TestData.TinyOptions();
        badP.LabelColumnName = "Label";
        badP.ConditionDropProbability = 1.5f;
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Diffusion(badP));
        var orphan = TestData.TinyOptions();
        orphan.NumClasses = 3;
        Assert.ThrowsExactly<ArgumentException>(() => _ml.Generative.Diffusion(orphan));
    }

    [TestMethod]
    public void AKeyTypedLabelColumnGivesTheNumberOfClasses()
    {
        var keyed = _ml.Transforms.Conversion.MapValueToKey("Label").Fit(_data).Transform(_data);
        int distinct = TestData.Squares(16).Select(r => r.Label).Distinct().Count();
        var options = TestData.TinyOptions(steps: 1);
        options.LabelColumnName = "Label";
        using var model = _ml.Generative.Diffusion(options).Fit(keyed);
        Assert.AreEqual(distinct, model.NumClasses);
        Assert.AreEqual(1, model.Generate(new[] { distinct - 1 }, new SamplerOptions { Steps = 2 }).Count);
        options.NumClasses = distinct + 1;
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Diffusion(options).Fit(keyed));
        StringAssert.Contains(e.Message, $"key type with {distinct} values");
    }

    [TestMethod]
    public void ConditionalCheckpointsResumeAndAreNotMixedWithUnconditionalOnes()
    {
        string dir = Path.Combine(_dir, "ckpt");
        string plainDir = Path.Combine(_dir, "ckpt-plain");
        var first = Conditional(2, dir);
        _ml.Generative.Diffusion(first).Fit(_data).Dispose();
        using (var resumed = _ml.Generative.Diffusion(Conditional(3, dir)).Fit(_data))
            Assert.AreEqual(3L, resumed.Config.TrainedSteps);

        var plain = TestData.TinyOptions(steps: 1);
        plain.CheckpointDirectory = plainDir;
        _ml.Generative.Diffusion(plain).Fit(_data).Dispose();
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => _ml.Generative.Diffusion(Conditional(2, plainDir)).Fit(_data));
        StringAssert.Contains(e.Message, "other training options");

        static DiffusionTrainer.Options Conditional(int steps, string dir)
        {
            var o = TestData.TinyOptions(steps);
            o.LabelColumnName = "Label";
            o.NumClasses = Classes;
            o.CheckpointDirectory = dir;
            return o;
        }
    }

    [TestMethod]
    public void InconsistentClassConfigsAreRejected()
    {
        _model.Config.Validate();
        var noColumn = Assert.ThrowsExactly<InvalidDataException>(() => (_model.Config with { LabelColumnName = null }).Validate());
        StringAssert.Contains(noColumn.Message, "LabelColumnName");
        var plainNetwork = _model.Config.Network with { NumClasses = 0 };
        var orphan = Assert.ThrowsExactly<InvalidDataException>(() => (_model.Config with { Network = plainNetwork }).Validate());
        StringAssert.Contains(orphan.Message, "LabelColumnName");
        var guided = _model.Config with { Network = plainNetwork, LabelColumnName = null, DefaultSampler = new SamplerSettings { GuidanceScale = 2f } };
        var e = Assert.ThrowsExactly<InvalidDataException>(() => guided.Validate());
        StringAssert.Contains(e.Message, "GuidanceScale");
        var drop = Assert.ThrowsExactly<InvalidDataException>(() => (_model.Config with { ConditionDropProbability = 2f }).Validate());
        StringAssert.Contains(drop.Message, "ConditionDropProbability");
        var huge = _model.Config.Network with { NumClasses = UNetConfigMax + 1 };
        Assert.ThrowsExactly<InvalidDataException>(() => (_model.Config with { Network = huge }).Validate());
        Assert.AreEqual(_model.Config.Network.MinimumParameterCount() - 26.0 * 32,
            (_model.Config.Network with { NumClasses = 0 }).MinimumParameterCount(), 1e-6, "the class embedding counts in the parameter lower bound");
    }

    private const int UNetConfigMax = UNetConfig.MaxClasses;

    [TestMethod]
    public void OldConfigsReadAsUnconditionalAndUnconditionalConfigsDoNotChange()
    {
        string json = _model.Config.ToJson();
        StringAssert.Contains(json, $"\"NumClasses\":{Classes}");
        StringAssert.Contains(json, "\"LabelColumnName\":\"Label\"");
        var node = System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject();
        node.Remove("LabelColumnName");
        node.Remove("ConditionDropProbability");
        node["Network"]!.AsObject().Remove("NumClasses");
        node["DefaultSampler"]!.AsObject().Remove("GuidanceScale");
        var old = DiffusionModelConfig.FromJson(node.ToJsonString());
        Assert.IsNull(old.LabelColumnName);
        Assert.AreEqual(0, old.Network.NumClasses);
        Assert.AreEqual(1f, old.DefaultSampler.GuidanceScale);
        string unconditional = System.Text.Json.JsonSerializer.Serialize(old.Network, DiffusionModelConfig.Json);
        Assert.IsFalse(unconditional.Contains("NumClasses"), "an unconditional network config (and so a checkpoint identity) is written as before");
    }
}
