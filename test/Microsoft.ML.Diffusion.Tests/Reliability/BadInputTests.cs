using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Training;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Diffusion.Tests.Reliability;

/// <summary>
/// One row per bad input: what is done, the exception type expected and fragments its message must contain (the column or
/// file, what was found, what was expected). Add a row to <see cref="Cases"/> to cover a new transform or option. Cases
/// already covered elsewhere (missing column, wrong image size, empty input, Steps 0 or &gt; T, Eta &lt; 0: see
/// SchemaValidationTests and DiffusionModelTests) are not repeated here. docs/reliability.md lists them all with their messages.
/// </summary>
[TestClass]
public class BadInputTests
{
    /// <summary>A bad input: <paramref name="Act"/> must throw exactly <paramref name="Expected"/> with all of <paramref name="Fragments"/> in its message.</summary>
    public sealed record BadInput(string Name, Action<Fixture> Act, Type Expected, params string[] Fragments);

    /// <summary>What the cases work on: a tiny trained model and its saved zip.</summary>
    public sealed class Fixture
    {
        public required MLContext Ml { get; init; }
        public required DiffusionModel Model { get; init; }
        public required byte[] Zip { get; init; }
        public required IDataView Data { get; init; }
    }

    private static TestModel _shared = null!;
    private static Fixture _fixture = null!;

    [ClassInitialize]
    public static void Setup(TestContext _)
    {
        _shared = TestModel.Shared("diffusion-bad-input");
        var (ml, model, data) = (_shared.Ml, _shared.Model, _shared.Data);
        _fixture = new Fixture { Ml = ml, Model = model, Zip = ReliabilityKit.SaveToBytes(ml, model, data.Schema), Data = data };
    }

    [ClassCleanup]
    public static void Cleanup() => _shared.Dispose();

    public static IEnumerable<object[]> CaseNames => Cases.Select(c => new object[] { c.Name });

    [TestMethod]
    [DynamicData(nameof(CaseNames))]
    public void BadInputFailsClearly(string name)
    {
        var c = Cases.Single(x => x.Name == name);
        Exception? thrown = null;
        try
        {
            c.Act(_fixture);
        }
        catch (Exception e)
        {
            thrown = e;
        }
        Assert.IsNotNull(thrown, $"{name}: nothing was thrown");
        Console.WriteLine($"{name} | {thrown.GetType().Name} | {thrown.Message.ReplaceLineEndings(" ")}");
        Assert.AreEqual(c.Expected, thrown.GetType(), $"{name}: {thrown}");
        foreach (var fragment in c.Fragments)
            StringAssert.Contains(thrown.Message, fragment, $"{name}: the message lacks '{fragment}'");
    }

    [TestMethod]
    public void ARewrittenZipStillLoads()
    {
        // The control of the forged-zip cases: rewriting the entries unchanged gives a loadable, identical model.
        using var loaded = (DiffusionModel)ReliabilityKit.Load(ReliabilityKit.Zip(ReliabilityKit.Entries(_fixture.Zip)));
        var options = new SamplerOptions { Steps = 3, Seed = 5 };
        CollectionAssert.AreEqual(TestData.Pixels(_fixture.Model.Generate(1, options)[0]), TestData.Pixels(loaded.Generate(1, options)[0]));
    }

    [TestMethod]
    public void AForgedHugeNetworkConfigAllocatesNothing()
    {
        // BaseChannels 1024 would need about 1.3 GB of weights; the check against the weights in the file comes first.
        var forged = ReliabilityKit.ChangeEntry(_fixture.Zip, "Model.key", k => ReliabilityKit.ChangeConfigJson(k, j => SetNetwork(j, "BaseChannels", 1024)));
        long before = ReliabilityKit.ResidentBytes();
        Assert.ThrowsExactly<InvalidDataException>(() => LoadForged(forged));
        long grown = ReliabilityKit.ResidentBytes() - before;
        Assert.IsTrue(grown < 100L << 20, $"RSS grew by {grown >> 20} MiB while rejecting the forged model");
    }

    private static readonly BadInput[] Cases =
    {
        // ---- training input ----
        new("text column", f => Train(f, Rows(new TextRow { Image = "a.png" }), o => { }),
            typeof(ArgumentOutOfRangeException), "Column 'Image'", "String", "expected an image", "ExtractPixels"),
        new("vector of the wrong size", f => Train(f, Rows(new Vector65()), o => { }),
            typeof(ArgumentOutOfRangeException), "Column 'Image'", "65 values", "64 or 192 values"),
        new("vector of unknown size", f => Train(f, Rows(new VariableVector { Image = new float[64] }), o => { }),
            typeof(ArgumentOutOfRangeException), "Column 'Image'", "unknown size", "ResizeImages"),
        new("one plane for Channels = 3 (wrong channel count)", f => Train(f, Planes(1, 8), o => o.Channels = 3),
            typeof(ArgumentOutOfRangeException), "Column 'Image'", "1 plane of 8x8", "Channels = 3", "3 planes (R, G, B)"),
        new("four planes (ARGB) for Channels = 1", f => Train(f, Planes(4, 8), o => { }),
            typeof(ArgumentOutOfRangeException), "Column 'Image'", "4 planes", "Channels = 1"),
        new("pixel vector of another image size", f => Train(f, Planes(3, 16), o => { }),
            typeof(ArgumentOutOfRangeException), "Column 'Image'", "Vector<Single, 3, 16, 16>", "ImageSize = 8"),
        new("NaN pixel in a float vector", f => Train(f, Planes(3, 8, badRow: 5, badIndex: 70, bad: float.NaN), o => o.ConvertToGrayscale = true),
            typeof(InvalidOperationException), "Column 'Image', row 5", "NaN", "index 70 (plane 1, y 0, x 6)", "[0, 255]"),
        new("infinite pixel in a float vector", f => Train(f, Planes(3, 8, badRow: 2, badIndex: 0, bad: float.PositiveInfinity), o => o.ConvertToGrayscale = true),
            typeof(InvalidOperationException), "Column 'Image', row 2", "Infinity", "[0, 255]"),
        new("pixel above 255 (scaled twice?)", f => Train(f, Planes(3, 8, badRow: 0, badIndex: 3, bad: 300f), o => o.ConvertToGrayscale = true),
            typeof(InvalidOperationException), "Column 'Image', row 0", "300", "[0, 255]"),
        new("negative pixel", f => Train(f, Planes(3, 8, badRow: 9, badIndex: 191, bad: -1f), o => o.ConvertToGrayscale = true),
            typeof(InvalidOperationException), "Column 'Image', row 9", "-1", "[0, 255]"),
        new("missing (null) image", f => Train(f, Rows(TestData.Squares(7).Append(new TestData.Image8 { Image = null! }).ToArray()), o => o.ShuffleBufferSize = 1),
            typeof(InvalidOperationException), "Column 'Image', row 7", "missing (null)", "8x8"),
        new("empty input of unknown row count", f => Train(f, Streamed(0), o => { }),
            typeof(InvalidOperationException), "Column 'Image'", "no rows", "BatchSize = 8"),

        // ---- training options ----
        new("Timesteps above the maximum", f => f.Ml.Generative.Diffusion(With(o => o.Timesteps = 1_000_000)),
            typeof(ArgumentOutOfRangeException), "Timesteps", "1000000", "100000"),
        new("MaxSteps = 0", f => f.Ml.Generative.Diffusion(With(o => o.MaxSteps = 0)),
            typeof(ArgumentOutOfRangeException), "MaxSteps", ">= 1"),
        new("Epochs = -1", f => f.Ml.Generative.Diffusion(With(o => o.Epochs = -1)),
            typeof(ArgumentOutOfRangeException), "Epochs", "-1", ">= 1"),
        new("LearningRate NaN", f => f.Ml.Generative.Diffusion(With(o => o.LearningRate = float.NaN)),
            typeof(ArgumentOutOfRangeException), "LearningRate", "positive"),
        new("EmaDecay = 1", f => f.Ml.Generative.Diffusion(With(o => o.EmaDecay = 1f)),
            typeof(ArgumentOutOfRangeException), "EmaDecay", "[0, 1)"),
        new("trainer's sampler Steps > T", f => f.Ml.Generative.Diffusion(With(o => o.Sampler = new SamplerOptions { Steps = 51 })),
            typeof(ArgumentOutOfRangeException), "Steps", "51", "50 timesteps"),
        new("ImageSize above the maximum", f => f.Ml.Generative.Diffusion(With(o => { o.ImageSize = 8192; o.AttentionResolutions = Array.Empty<int>(); })),
            typeof(ArgumentException), "ImageSize", "8192", "1..4096"),

        // ---- sampling ----
        new("negative Steps", f => f.Model.Generate(1, new SamplerOptions { Steps = -3 }),
            typeof(ArgumentOutOfRangeException), "Steps", "-3", "between 1 and the model's 50 timesteps"),
        new("Eta NaN", f => f.Model.Generate(1, new SamplerOptions { Eta = float.NaN }),
            typeof(ArgumentOutOfRangeException), "Eta", "NaN", ">= 0"),
        new("sampler BatchSize = 0", f => f.Model.Generate(1, new SamplerOptions { BatchSize = 0 }),
            typeof(ArgumentOutOfRangeException), "BatchSize", ">= 1"),
        new("WithSampler Steps > T", f => f.Model.WithSampler(new SamplerOptions { Steps = 500 }),
            typeof(ArgumentOutOfRangeException), "Steps", "500", "50 timesteps"),
        new("PredictionEngine with a Single seed column", f => f.Ml.Model.CreatePredictionEngine<FloatSeed, Generated8>(f.Model),
            typeof(ArgumentOutOfRangeException), "Column 'Seed'", "Single", "UInt32"),

        // ---- model files ----
        new("not a zip", f => LoadForged(Encoding.ASCII.GetBytes("this is not a model zip")),
            typeof(InvalidDataException)),
        new("truncated zip (first half)", f => LoadForged(f.Zip[..(f.Zip.Length / 2)]),
            typeof(InvalidDataException)),
        new("model from a future format version", f => LoadForged(ReliabilityKit.ChangeEntry(f.Zip, "Model.key", k => ReliabilityKit.ChangeVersion(k, 0x00020001, 0x00020001))),
            typeof(InvalidDataException), "newer Microsoft.ML.Diffusion", "0x00020001", "0x00010003", "Update"),
        new("weights of another network (BaseChannels 16)", f => LoadForged(ReliabilityKit.ChangeEntry(f.Zip, ReliabilityKit.WeightsEntry, _ => OtherWeights(f))),
            typeof(InvalidDataException), "'TorchWeights.bin'", "expected"),
        new("truncated weights stream", f => LoadForged(ReliabilityKit.ChangeEntry(f.Zip, ReliabilityKit.WeightsEntry, w => w[..(w.Length / 2)])),
            typeof(InvalidDataException), "'TorchWeights.bin'", "truncated"),
        new("empty weights stream", f => LoadForged(ReliabilityKit.ChangeEntry(f.Zip, ReliabilityKit.WeightsEntry, _ => Array.Empty<byte>())),
            typeof(InvalidDataException), "'TorchWeights.bin'", "truncated"),
        new("forged huge rank field in the weights", f => LoadForged(ReliabilityKit.ChangeEntry(f.Zip, ReliabilityKit.WeightsEntry, w =>
            { var (at, len, _, _) = ReliabilityKit.FirstTensorFields(w); return ReliabilityKit.ReplaceLeb(w, at, len, 1L << 40); })),
            typeof(InvalidDataException), "'TorchWeights.bin'", "rank 1099511627776", "expected"),
        new("forged huge dimension in the weights", f => LoadForged(ReliabilityKit.ChangeEntry(f.Zip, ReliabilityKit.WeightsEntry, w =>
            { var (_, _, at, len) = ReliabilityKit.FirstTensorFields(w); return ReliabilityKit.ReplaceLeb(w, at, len, 1L << 40); })),
            typeof(InvalidDataException), "'TorchWeights.bin'", "size 1099511627776 in dimension 0", "expected shape"),
        new("forged huge dimension in the manifest", f => LoadForged(ReliabilityKit.ChangeEntry(f.Zip, "Model.key", k => ReliabilityKit.ChangeFirstManifestDim(k, 1L << 40))),
            typeof(InvalidDataException), "'TorchWeights.bin'", "expected shape [1099511627776"),
        new("forged network config (BaseChannels 1024) over small weights", f => LoadForged(ReliabilityKit.ChangeEntry(f.Zip, "Model.key", k => ReliabilityKit.ChangeConfigJson(k, j => SetNetwork(j, "BaseChannels", 1024)))),
            typeof(InvalidDataException), "network config needs at least", "parameters but the zip holds", "corrupt or was edited"),
        new("forged class count (NumClasses 50,000,000: a 6 GB class embedding)", f => LoadForged(ReliabilityKit.ChangeEntry(f.Zip, "Model.key", k => ReliabilityKit.ChangeConfigJson(k, j => SetNetwork(j, "NumClasses", 50_000_000)))),
            typeof(InvalidDataException), "NumClasses is 50000000", "expected 0 (unconditional) .. 100000", "corrupt or was edited"),
        new("forged Timesteps = int.MaxValue", f => LoadForged(ReliabilityKit.ChangeEntry(f.Zip, "Model.key", k => ReliabilityKit.ChangeConfigJson(k, j => Set(j, "Timesteps", int.MaxValue)))),
            typeof(InvalidDataException), "Timesteps = 2147483647", "1..100000"),
        new("forged Channels = 2", f => LoadForged(ReliabilityKit.ChangeEntry(f.Zip, "Model.key", k => ReliabilityKit.ChangeConfigJson(k, j => Set(j, "Channels", 2)))),
            typeof(InvalidDataException), "Channels = 2", "1 (grayscale) or 3 (RGB)"),
        new("corrupt config JSON", f => LoadForged(ReliabilityKit.ChangeEntry(f.Zip, "Model.key", k => ReliabilityKit.ChangeConfigJson(k, j => "{" + j[2..]))),
            typeof(InvalidDataException), "configuration", "corrupt"),

        // ---- checkpoints ----
        new("truncated checkpoint", f => ResumeFrom(f, bytes => bytes[..(bytes.Length * 2 / 3)]),
            typeof(InvalidDataException), "checkpoint.bin", "truncated or corrupt", "start over"),
        new("checkpoint of another file type", f => ResumeFrom(f, bytes => Encoding.ASCII.GetBytes("PK\u0003\u0004 not a checkpoint at all")),
            typeof(InvalidDataException), "checkpoint.bin", "not a diffusion training checkpoint"),
        new("checkpoint with a forged generator-state size", f => ResumeFrom(f, ForgeGeneratorSize),
            typeof(InvalidDataException), "checkpoint.bin", "generator state has 2147483647 bytes"),
        new("checkpoint with a forged weight dimension", f => ResumeFrom(f, ForgeCheckpointWeightDim),
            typeof(InvalidDataException), "checkpoint.bin", "The checkpoint's weights", "1099511627776"),
    };

    // ---- case helpers ----

    private static DiffusionTrainer.Options With(Action<DiffusionTrainer.Options> change)
    {
        var o = TestData.TinyOptions(steps: 2);
        change(o);
        return o;
    }

    private static void Train(Fixture f, IDataView data, Action<DiffusionTrainer.Options> change)
    {
        using var model = f.Ml.Generative.Diffusion(With(change)).Fit(data);
    }

    private static IDataView Rows<T>(params T[] rows) where T : class => new MLContext().Data.LoadFromEnumerable(rows);

    /// <summary>16 rows of planar pixel vectors Vector&lt;Single, planes, size, size&gt; (values 20 and 230), one value replaced when asked.</summary>
    private static IDataView Planes(int planes, int size, int badRow = -1, int badIndex = 0, float bad = 0)
    {
        var ml = new MLContext();
        var rows = Enumerable.Range(0, 16).Select(r =>
        {
            var v = Enumerable.Range(0, planes * size * size).Select(i => (i + r) % 7 == 0 ? 230f : 20f).ToArray();
            if (r == badRow) v[badIndex] = bad;
            return new PixelRow { Image = v };
        }).ToList();
        var schema = SchemaDefinition.Create(typeof(PixelRow));
        schema[nameof(PixelRow.Image)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, planes, size, size);
        return ml.Data.LoadFromEnumerable(rows, schema);
    }

    /// <summary>A streamed input (LoadFromEnumerable of a lazy sequence): its row count is not known in advance.</summary>
    private static IDataView Streamed(int count)
    {
        var data = new MLContext().Data.LoadFromEnumerable(TestData.Squares(count));
        Assert.IsNull(data.GetRowCount(), "a streamed view should not know its row count");
        return data;
    }

    /// <summary>
    /// Loads forged model bytes both ways: mlContext.Model.Load must fail (ML.NET wraps the loader's error in a
    /// TargetInvocationException, or reports a damaged zip as a FormatException), and mlContext.Generative.LoadDiffusionModel
    /// must throw the same error unwrapped, naming the file; that exception is the case's result.
    /// </summary>
    private static void LoadForged(byte[] zip)
    {
        Exception? raw = null;
        try
        {
            ReliabilityKit.Load(zip);
        }
        catch (Exception e)
        {
            raw = e;
        }
        Assert.IsNotNull(raw, "mlContext.Model.Load accepted the forged model");
        while (raw is System.Reflection.TargetInvocationException { InnerException: { } inner }) raw = inner;
        string dir = TestData.TempDirectory("diffusion-forged");
        string path = Path.Combine(dir, "forged-model.zip");
        File.WriteAllBytes(path, zip);
        try
        {
            new MLContext().Generative.LoadDiffusionModel(path).Dispose();
        }
        catch (InvalidDataException e)
        {
            StringAssert.Contains(e.Message, path, "the error names the file");
            StringAssert.Contains(e.Message, raw.Message, "the same error as mlContext.Model.Load's");
            throw;
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static string Set(string json, string field, object value)
    {
        var node = Compact(JsonNode.Parse(json)!);
        node[field] = JsonValue.Create(value);
        return node.ToJsonString();
    }

    private static string SetNetwork(string json, string field, object value)
    {
        var node = Compact(JsonNode.Parse(json)!);
        node["Network"]![field] = JsonValue.Create(value);
        return node.ToJsonString();
    }

    /// <summary>Room for a longer forged value (the JSON keeps its byte length): a one-letter output column, and no property
    /// whose value is its default null, false or 0.</summary>
    private static JsonNode Compact(JsonNode node)
    {
        node["OutputColumnName"] = "G";
        foreach (var obj in new[] { node.AsObject(), node["Network"]!.AsObject(), node["DefaultSampler"]!.AsObject() })
            foreach (var (name, value) in obj.ToList())
                if (value is null || value.ToJsonString() is "false" or "0")
                    obj.Remove(name);
        return node;
    }

    private static byte[] OtherWeights(Fixture f)
    {
        var o = TestData.TinyOptions(steps: 1);
        o.BaseChannels = 16;
        using var other = f.Ml.Generative.Diffusion(o).Fit(f.Data);
        return ReliabilityKit.WeightBytes(f.Ml, other, f.Data.Schema);
    }

    /// <summary>Trains 2 steps with checkpoints, damages the checkpoint with <paramref name="damage"/>, and resumes.</summary>
    private static void ResumeFrom(Fixture f, Func<byte[], byte[]> damage)
    {
        string dir = TestData.TempDirectory("diffusion-bad-ckpt");
        try
        {
            var first = With(o => o.CheckpointDirectory = dir);
            f.Ml.Generative.Diffusion(first).Fit(f.Data).Dispose();
            string path = TrainingCheckpoint.PathIn(dir);
            File.WriteAllBytes(path, damage(File.ReadAllBytes(path)));
            var second = With(o => { o.CheckpointDirectory = dir; o.MaxSteps = 4; });
            f.Ml.Generative.Diffusion(second).Fit(f.Data).Dispose();
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>Checkpoint layout (TrainingCheckpoint.Write): magic[8], int version, string config, long seed, int epoch, long batch, then the
    /// loop state: long step, long EMA updates, int generator-state length, ...</summary>
    private static int GeneratorSizeOffset(byte[] checkpoint)
    {
        using var r = new BinaryReader(new MemoryStream(checkpoint), Encoding.UTF8);
        r.ReadBytes(8);
        r.ReadInt32();
        r.ReadString();
        r.ReadInt64();
        r.ReadInt32();
        r.ReadInt64();
        r.ReadInt64();
        r.ReadInt64();
        return (int)r.BaseStream.Position;
    }

    private static byte[] ForgeGeneratorSize(byte[] checkpoint)
    {
        var result = (byte[])checkpoint.Clone();
        BitConverter.GetBytes(int.MaxValue).CopyTo(result, GeneratorSizeOffset(checkpoint));
        return result;
    }

    private static byte[] ForgeCheckpointWeightDim(byte[] checkpoint)
    {
        int at = GeneratorSizeOffset(checkpoint);
        int weightsAt = at + 4 + BitConverter.ToInt32(checkpoint, at);
        var weights = checkpoint[weightsAt..];
        var (_, _, dimAt, dimLength) = ReliabilityKit.FirstTensorFields(weights);
        return ReliabilityKit.ReplaceLeb(checkpoint, weightsAt + dimAt, dimLength, 1L << 40);
    }

    // ---- row types ----

    private sealed class TextRow
    {
        public string Image { get; set; } = "";
    }

    private sealed class Vector65
    {
        [VectorType(65)]
        public float[] Image { get; set; } = new float[65];
    }

    private sealed class VariableVector
    {
        [VectorType]
        public float[] Image { get; set; } = Array.Empty<float>();
    }

    private sealed class PixelRow
    {
        public float[] Image { get; set; } = Array.Empty<float>();
    }

    private sealed class FloatSeed
    {
        public float Seed { get; set; }
    }

    private sealed class Generated8
    {
        [ImageType(8, 8)]
        public MLImage GeneratedImage { get; set; } = null!;
    }
}
