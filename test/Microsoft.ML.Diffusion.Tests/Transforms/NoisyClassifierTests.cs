using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Persistence;
using Microsoft.ML.Diffusion.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Transforms;

/// <summary>
/// The noisy classifier of classifier guidance (Dhariwal &amp; Nichol 2021) as an ML.NET estimator/transformer, and guidance through
/// <see cref="SamplerOptions.Classifier"/> on an unconditional tiny model: schema, save/load, s = 0 equals no classifier, guidance
/// raises log p(y | x_0), requests with labels, and the errors.
/// </summary>
[TestClass]
public class NoisyClassifierTests
{
    private static MLContext _ml = null!;
    private static IDataView _data = null!;
    private static DiffusionModel _model = null!;
    private static NoisyClassifierModel _classifier = null!;
    private static string _dir = null!;

    /// <summary>8x8 images, class 0: a bright square at the left, class 1: at the right.</summary>
    private static IEnumerable<TestData.Image8> LeftRight(int count, int seed)
    {
        var rng = new Random(seed);
        for (int i = 0; i < count; i++)
        {
            uint label = (uint)(i % 2);
            int ox = label == 0 ? rng.Next(0, 2) : rng.Next(4, 6), oy = rng.Next(0, 5);
            yield return new TestData.Image8 { Image = TestData.Gray(8, (x, y) => (byte)(x >= ox && x < ox + 3 && y >= oy && y < oy + 3 ? 230 : 20)), Label = label };
        }
    }

    private static NoisyClassifierTrainer.Options TinyClassifier(long steps = 10) => new()
    {
        DiffusionModel = _model, ImageColumnName = "Image", LabelColumnName = "Label", NumClasses = 2, BaseChannels = 8,
        GroupNormGroups = 4, BatchSize = 8, Epochs = 100, MaxSteps = steps, LearningRate = 3e-3f, Seed = 5,
    };

    [ClassInitialize]
    public static void Fit(TestContext _)
    {
        _ml = new MLContext(seed: 1);
        _data = _ml.Data.LoadFromEnumerable(LeftRight(32, 1).ToList());
        _model = _ml.Generative.Diffusion(TestData.TinyOptions(steps: 4)).Fit(_data);
        _classifier = _ml.Generative.NoisyClassifier(TinyClassifier()).Fit(_data);
        _dir = Path.Combine(Path.GetTempPath(), "diffusion-ncls-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
    }

    [ClassCleanup]
    public static void Cleanup()
    {
        _classifier?.Dispose();
        _model?.Dispose();
        if (_dir is not null && Directory.Exists(_dir)) Directory.Delete(_dir, true);
    }

    private static SamplerOptions Options(SamplerKind kind, float s, NoisyClassifierModel? classifier = null) => new()
    {
        Sampler = kind, Steps = kind == SamplerKind.Ddpm ? 6 : 4, Seed = 3, BatchSize = 4, Classifier = classifier ?? _classifier, ClassifierScale = s,
    };

    private static readonly SamplerKind[] Kinds = { SamplerKind.Ddim, SamplerKind.Ddpm, SamplerKind.DpmSolverPlusPlus };

    [TestMethod]
    public void TheClassifierIsTheEncoderHalfForTheModelsProcess()
    {
        Assert.AreEqual(2, _classifier.NumClasses);
        Assert.AreEqual(8, _classifier.ImageSize);
        Assert.AreEqual(1, _classifier.Channels);
        Assert.AreEqual(_model.Timesteps, _classifier.Timesteps);
        Assert.AreEqual(_model.Config.Schedule, _classifier.Schedule);
        Assert.AreEqual(10, _classifier.Config.TrainedSteps);
        CollectionAssert.AreEqual(_model.Config.Network.ChannelMultipliers, _classifier.Config.Network.ChannelMultipliers, "defaults to the U-Net's levels");
        // The head starts at zero: an untrained classifier gives the uniform distribution.
        using var fresh = new NoisyClassifierNetwork(_classifier.Config.Network);
        using var x = randn(3, 1, 8, 8);
        using var logits = fresh.forward(x, tensor(new long[] { 0, 10, 49 }));
        CollectionAssert.AreEqual(new long[] { 3, 2 }, logits.shape);
        Assert.AreEqual(0f, logits.abs().max().item<float>());
        Assert.IsLessThan(_classifier.ParameterCount, (long)_classifier.Config.Network.MinimumParameterCount() - 1, "the lower bound is below the count");
    }

    [TestMethod]
    public void TransformAddsPredictedLabelAndScoreThatMatchTheLogProbabilities()
    {
        var schema = _classifier.GetOutputSchema(_data.Schema);
        var label = schema["PredictedLabel"];
        Assert.IsInstanceOfType<KeyDataViewType>(label.Type);
        Assert.AreEqual(2UL, ((KeyDataViewType)label.Type).Count);
        var score = schema["Score"];
        Assert.AreEqual(new VectorDataViewType(NumberDataViewType.Single, 2), score.Type);
        var output = _classifier.Transform(_data);
        var scores = output.GetColumn<VBuffer<float>>("Score").Select(v => v.DenseValues().ToArray()).ToList();
        var predicted = output.GetColumn<uint>("PredictedLabel").ToList();
        Assert.HasCount(32, scores);
        var images = _data.GetColumn<MLImage>("Image").ToList();
        using var x = Microsoft.ML.Diffusion.Imaging.ImageTensorConverter.ToTensor(images, 1);
        using var logp = _classifier.PredictLogProbabilities(x);
        var expected = logp.exp().data<float>().ToArray();
        for (int i = 0; i < 32; i++)
        {
            Assert.AreEqual(1f, scores[i].Sum(), 1e-5f, $"row {i}: probabilities");
            Assert.AreEqual(expected[2 * i], scores[i][0], 1e-6f);
            Assert.AreEqual(expected[2 * i + 1], scores[i][1], 1e-6f);
            Assert.AreEqual(scores[i][1] > scores[i][0] ? 2u : 1u, predicted[i], "key k + 1 = class k");
        }
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _classifier.GetOutputSchema(_ml.Data.LoadFromEnumerable(new[] { new TestData.Image16() }).Schema));
        StringAssert.Contains(e.Message, "'Image'");
    }

    /// <summary>A PredictionEngine's output row: the classifier's two columns.</summary>
    public sealed class ClassifiedRow
    {
        public uint PredictedLabel { get; set; }

        [VectorType(2)]
        public float[] Score { get; set; } = Array.Empty<float>();
    }

    [TestMethod]
    public void PredictionEngineClassifiesEachRowAsTransformDoes()
    {
        Assert.IsTrue(_classifier.IsRowToRowMapper);
        var rows = LeftRight(6, 9).ToList();
        var viaTransform = _classifier.Transform(_ml.Data.LoadFromEnumerable(rows));
        var scores = viaTransform.GetColumn<VBuffer<float>>("Score").Select(v => v.DenseValues().ToArray()).ToList();
        var labels = viaTransform.GetColumn<uint>("PredictedLabel").ToList();
        // OwnsTransformer = false: disposing the engine must not dispose the shared classifier.
        using var engine = _ml.Model.CreatePredictionEngine<TestData.Image8, ClassifiedRow>(_classifier,
            new PredictionEngineOptions { OwnsTransformer = false });
        for (int i = 0; i < rows.Count; i++)
        {
            var one = engine.Predict(rows[i]);
            Assert.HasCount(2, one.Score);
            // A batch of one sums in the kernels' order for one image; equal up to float rounding.
            Assert.AreEqual(scores[i][0], one.Score[0], 1e-5f, $"row {i}");
            Assert.AreEqual(scores[i][1], one.Score[1], 1e-5f, $"row {i}");
            Assert.AreEqual(labels[i], one.PredictedLabel, $"row {i}");
        }
        // The engine classifies each input anew: the same rows in another order give their own results.
        var last = engine.Predict(rows[^1]);
        var first = engine.Predict(rows[0]);
        Assert.AreEqual(scores[^1][0], last.Score[0], 1e-5f);
        Assert.AreEqual(scores[0][0], first.Score[0], 1e-5f);
    }

    [TestMethod]
    public void PredictionEngineNamesAMissingImageColumn()
    {
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _classifier.GetRowToRowMapper(
            _ml.Data.LoadFromEnumerable(new[] { new { Picture = 1f } }).Schema));
        StringAssert.Contains(e.Message, "'Image'");
    }

    [TestMethod]
    public void SaveAndLoadGiveIdenticalScores()
    {
        string path = Path.Combine(_dir, "ncls.zip");
        _ml.Model.Save(_classifier, _data.Schema, path);
        using var loaded = (NoisyClassifierModel)new MLContext().Model.Load(path, out _);
        Assert.AreEqual(_classifier.Config.ToJson(), loaded.Config.ToJson());
        var before = _classifier.Transform(_data).GetColumn<VBuffer<float>>("Score").SelectMany(v => v.DenseValues()).ToArray();
        var after = loaded.Transform(_data).GetColumn<VBuffer<float>>("Score").SelectMany(v => v.DenseValues()).ToArray();
        CollectionAssert.AreEqual(before, after);
        var labels = new[] { 0, 1 };
        using var a = _model.GenerateTensor(new uint[] { 1, 2 }, labels, Options(SamplerKind.Ddim, 5f));
        using var b = _model.GenerateTensor(new uint[] { 1, 2 }, labels, Options(SamplerKind.Ddim, 5f, loaded));
        Assert.IsTrue(a.allclose(b, 0, 0), "the loaded classifier guides identically");
    }

    [TestMethod]
    public void ScaleZeroGivesTheImagesOfNoClassifierBitForBit()
    {
        var seeds = new uint[] { 4, 5, 6 };
        foreach (var kind in Kinds)
        {
            var plainOptions = Options(kind, 0f);
            plainOptions.Classifier = null;
            using var plain = _model.GenerateTensor(seeds, plainOptions);
            using var zero = _model.GenerateTensor(seeds, new[] { 0, 1, 1 }, Options(kind, 0f));
            Assert.IsTrue(plain.allclose(zero, 0, 0), $"{kind}: s = 0");
            using var guided = _model.GenerateTensor(seeds, new[] { 0, 1, 1 }, Options(kind, 5f));
            Assert.IsGreaterThan(1e-4f, (guided - plain).abs().max().item<float>(), $"{kind}: s = 5 changes the images");
        }
    }

    [TestMethod]
    public void GuidanceRaisesTheClassifiersLogProbabilityOfTheLabel()
    {
        // A stand-in classifier with linear logits (class 1 = bright right half minus left half), whose gradient steers clearly.
        using var standIn = new NoisyClassifierModel(new MLContext(), _classifier.Config, new NoisyClassifierNetwork(_classifier.Config.Network), CPU);
        using var w = zeros(2, 64);
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++)
                w[1, 8 * y + x] = x < 4 ? -0.5f : 0.5f;
        standIn.LogitsForward = (img, t) => img.reshape(img.shape[0], -1).matmul(w.t());
        var seeds = Enumerable.Range(0, 8).Select(i => (uint)(20 + i)).ToArray();
        var labels = Enumerable.Range(0, 8).Select(i => i % 2).ToArray();
        foreach (var kind in Kinds)
        {
            using var plain = _model.GenerateTensor(seeds, labels, Options(kind, 0f, standIn));
            using var guided = _model.GenerateTensor(seeds, labels, Options(kind, 20f, standIn));
            double Mean(Tensor images)
            {
                using var logp = standIn.PredictLogProbabilities(images);
                return Enumerable.Range(0, 8).Average(i => logp[i, labels[i]].item<float>());
            }
            double before = Mean(plain), after = Mean(guided);
            Assert.IsGreaterThan(before + 0.5, after, $"{kind}: mean log p(y | x_0) {before:F3} -> {after:F3}");
        }
    }

    [TestMethod]
    public void RequestsWithLabelsReachTheClassifierOfAnUnconditionalModel()
    {
        var options = Options(SamplerKind.Ddim, 5f);
        using var m = _model.WithSampler(options);
        var labels = new[] { 1, 0, 1 };
        var requests = _ml.Generative.CreateRequests(3, 3, labels);
        var viaTransform = m.Transform(requests).GetColumn<MLImage>(m.OutputColumnName).Select(TestData.Pixels).ToList();
        var viaGenerate = _model.Generate(labels, options).Select(TestData.Pixels).ToList();
        for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(viaGenerate[i], viaTransform[i], $"image {i}");
        var engine = _ml.Model.CreatePredictionEngine<ClassConditionalModelTests.LabeledRequest, ClassConditionalModelTests.GeneratedRow>(m);
        using (var one = engine.Predict(new ClassConditionalModelTests.LabeledRequest { Seed = 4, Label = 0 }))
            CollectionAssert.AreEqual(viaGenerate[1], TestData.Pixels(one.GeneratedImage), "PredictionEngine reads a plain Label column");
        var bad = _ml.Generative.CreateRequests(2, 0, new[] { 1, 2 });
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => m.Transform(bad).GetColumn<MLImage>(m.OutputColumnName).ToList());
        StringAssert.Contains(e.Message, "row 1: label 2");
        // Without a classifier the unconditional model still rejects labels.
        var e2 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _model.Transform(requests));
        StringAssert.Contains(e2.Message, "SamplerOptions.Classifier");
    }

    [TestMethod]
    public void BadGuidanceFailsNamingTheOptionTheValueAndWhatIsExpected()
    {
        var e = Assert.ThrowsExactly<ArgumentException>(() => _model.GenerateTensor(new uint[] { 1 }, Options(SamplerKind.Ddim, 1f)));
        StringAssert.Contains(e.Message, "no class labels");
        var e2 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _model.Generate(new[] { 0, 2 }, Options(SamplerKind.Ddim, 1f)));
        StringAssert.Contains(e2.Message, "Label 2 (index 1)");
        StringAssert.Contains(e2.Message, "0..1");
        foreach (var bad in new[] { -1f, float.NaN, float.PositiveInfinity })
        {
            var e3 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _model.Generate(new[] { 0 }, Options(SamplerKind.Ddim, bad)));
            StringAssert.Contains(e3.Message, "SamplerOptions.ClassifierScale");
        }
        var noClassifier = Options(SamplerKind.Ddim, 1f);
        noClassifier.Classifier = null;
        var e4 = Assert.ThrowsExactly<InvalidOperationException>(() => _model.Generate(new[] { 0 }, noClassifier));
        StringAssert.Contains(e4.Message, "no class conditioning");

        // A classifier trained for another T, image size or schedule.
        foreach (var (config, what) in new[]
                 {
                     (_classifier.Config with { Timesteps = 40 }, "T = 40"),
                     (_classifier.Config with { Schedule = NoiseSchedule.Cosine }, "the noise schedule Cosine"),
                 })
        {
            using var other = new NoisyClassifierModel(new MLContext(), config, new NoisyClassifierNetwork(config.Network), CPU);
            var e5 = Assert.ThrowsExactly<ArgumentException>(() => _model.Generate(new[] { 0 }, Options(SamplerKind.Ddim, 1f, other)));
            StringAssert.Contains(e5.Message, $"SamplerOptions.Classifier was trained for {what}");
            Assert.ThrowsExactly<ArgumentException>(() => _model.WithSampler(Options(SamplerKind.Ddim, 1f, other)));
        }
        var big = _classifier.Config with { Network = _classifier.Config.Network with { ImageSize = 16, AttentionResolutions = new[] { 8 } } };
        using var bigger = new NoisyClassifierModel(new MLContext(), big, new NoisyClassifierNetwork(big.Network), CPU);
        var e6 = Assert.ThrowsExactly<ArgumentException>(() => _model.Generate(new[] { 0 }, Options(SamplerKind.Ddim, 1f, bigger)));
        StringAssert.Contains(e6.Message, "image size 16");
    }

    [TestMethod]
    public void BadTrainerOptionsAndLabelsFailClearly()
    {
        var none = TinyClassifier();
        none.DiffusionModel = null;
        var e = Assert.ThrowsExactly<ArgumentNullException>(() => _ml.Generative.NoisyClassifier(none));
        StringAssert.Contains(e.Message, "DiffusionModel");
        var numbers = TinyClassifier();
        numbers.NumClasses = null;
        var e2 = Assert.ThrowsExactly<ArgumentException>(() => _ml.Generative.NoisyClassifier(numbers).Fit(_data));
        StringAssert.Contains(e2.Message, "NumClasses");
        var missing = TinyClassifier();
        missing.LabelColumnName = "Class";
        var e3 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.NoisyClassifier(missing).Fit(_data));
        StringAssert.Contains(e3.Message, "'Class' was not found");
        var lr = TinyClassifier();
        lr.LearningRate = -1;
        var e4 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.NoisyClassifier(lr));
        StringAssert.Contains(e4.Message, "LearningRate is -1");
        var outside = _ml.Data.LoadFromEnumerable(LeftRight(8, 2).Select((r, i) => { r.Label = (uint)(i == 5 ? 7 : r.Label); return r; }).ToList());
        var small = TinyClassifier();
        small.ShuffleBufferSize = 1;
        var e5 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.NoisyClassifier(small).Fit(outside));
        StringAssert.Contains(e5.Message, "row 5: label 7");
    }

    [TestMethod]
    public void ANaNLossStopsTrainingWithAClearMessage()
    {
        // The trainer rejects NaN pixels on input; a NaN reaching the loop (e.g. from diverging weights) stops it.
        var config = _classifier.Config.Network;
        using var network = new NoisyClassifierNetwork(config);
        using var loop = new NoisyClassifierTrainingLoop(network, _model.Schedule, 1e-3, 0.05, 1, CPU);
        using var good = randn(4, 1, 8, 8);
        using var labels = tensor(new long[] { 0, 1, 0, 1 });
        float first = loop.TrainStep(good, labels);
        Assert.AreEqual(Math.Log(2), first, 1e-4, "the zero-initialised head starts at the uniform distribution: cross-entropy ln 2");
        using var nan = full(new long[] { 4, 1, 8, 8 }, float.NaN);
        var e = Assert.ThrowsExactly<NonFiniteLossException>(() => loop.TrainStep(nan, labels));
        StringAssert.Contains(e.Message, "Training stopped at step 2: the classifier's cross-entropy is NaN");
        StringAssert.Contains(e.Message, "the last finite loss was");
        Assert.AreEqual(1, loop.Step, "the failed step leaves the weights and the step count untouched");
    }
}
