using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Sampling;
using Microsoft.ML.Transforms.Image;
using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Transforms;

namespace Microsoft.ML.Diffusion.Tests.Latent;

/// <summary>DiffusionTrainer.Options.Autoencoder: a diffusion model on scaled latents that decodes at the end; the scale factor,
/// generation with every sampler, save/load of both models in one zip, Inpaint and Upscale in latent space, bad input.</summary>
[TestClass]
public class LatentDiffusionTests
{
    private static MLContext _ml = null!;
    private static List<LatentTestData.Row16> _rows = null!;
    private static IDataView _data = null!;
    private static AutoencoderModel _autoencoder = null!;
    private static DiffusionModel _model = null!;

    public sealed class SmallRow
    {
        [ImageType(4, 4)]
        public MLImage Small { get; set; } = null!;

        public uint Label { get; set; }
    }

    /// <summary>The tiny 8x8 U-Net options on the 8x8x4 latent grid of 16x16 images (autoencoder factor 2).</summary>
    private static DiffusionTrainer.Options LatentOptions(AutoencoderModel autoencoder)
    {
        var o = TestData.TinyOptions(steps: 3);
        o.ImageSize = 16;
        o.Autoencoder = autoencoder;
        return o;
    }

    [ClassInitialize]
    public static void Fit(TestContext _)
    {
        _ml = new MLContext(seed: 1);
        _rows = LatentTestData.Squares16(24);
        _data = _ml.Data.LoadFromEnumerable(_rows);
        _autoencoder = _ml.Generative.Autoencoder(LatentTestData.TinyAutoencoder(steps: 4, factor: 2)).Fit(_data);
        _model = _ml.Generative.Diffusion(LatentOptions(_autoencoder)).Fit(_data);
    }

    [ClassCleanup]
    public static void Cleanup()
    {
        _model.Dispose();
        _autoencoder.Dispose();
    }

    [TestMethod]
    public void ClassifierGuidanceIsRefusedForALatentModel()
    {
        // Training a noisy classifier for the latent model is refused, naming the option and the latent shape.
        var train = Assert.ThrowsExactly<ArgumentException>(() => _ml.Generative.NoisyClassifier(new NoisyClassifierTrainer.Options
        {
            DiffusionModel = _model, ImageColumnName = "Image", LabelColumnName = "Label", NumClasses = 2, BaseChannels = 8,
            GroupNormGroups = 4, BatchSize = 8, MaxSteps = 1,
        }).Fit(_data));
        StringAssert.Contains(train.Message, "NoisyClassifierTrainer.Options.DiffusionModel is a latent diffusion model (4x8x8 latents)");

        // A classifier trained for a pixel-space model of the same size, set on the latent model's sampler, is refused too.
        var pixelOptions = TestData.TinyOptions(steps: 1);
        pixelOptions.ImageSize = 16;
        pixelOptions.AttentionResolutions = new[] { 8 };
        using var pixel = _ml.Generative.Diffusion(pixelOptions).Fit(_data);
        using var classifier = _ml.Generative.NoisyClassifier(new NoisyClassifierTrainer.Options
        {
            DiffusionModel = pixel, ImageColumnName = "Image", LabelColumnName = "Label", NumClasses = 24, BaseChannels = 8,
            GroupNormGroups = 4, BatchSize = 8, MaxSteps = 1,
        }).Fit(_data);
        var sample = Assert.ThrowsExactly<ArgumentException>(() => _model.Generate(new[] { 0, 1 },
            new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 2, Classifier = classifier, ClassifierScale = 2 }));
        StringAssert.Contains(sample.Message, "SamplerOptions.Classifier is set, but this is a latent diffusion model");
    }

    [TestMethod]
    public void NetworkWorksOnTheLatentGridAndImagesHaveFullSize()
    {
        Assert.AreEqual(8, _model.Config.Network.ImageSize);
        Assert.AreEqual(4, _model.Config.Network.InChannels);
        Assert.AreEqual(4, _model.Config.Network.OutChannels);
        Assert.AreEqual(16, _model.ImageSize);
        Assert.AreSame(_autoencoder, _model.Autoencoder);
        foreach (var sampler in new[] { SamplerKind.Ddpm, SamplerKind.Ddim, SamplerKind.DpmSolverPlusPlus })
        {
            var images = _model.Generate(2, new SamplerOptions { Sampler = sampler, Steps = 4, Seed = 3 });
            Assert.AreEqual(2, images.Count);
            Assert.IsTrue(images.All(i => i.Width == 16 && i.Height == 16), $"{sampler}: images of the full size");
        }
        var output = _model.Transform(_ml.Generative.CreateRequests(2, seed: 3));
        Assert.AreEqual(new ImageDataViewType(16, 16), output.Schema["GeneratedImage"].Type);
        Assert.AreEqual(2, output.GetColumn<MLImage>("GeneratedImage").Count(i => i.Width == 16));
    }

    [TestMethod]
    public void GenerationDecodesTheSampledLatentsDividedByTheScale()
    {
        var seeds = new uint[] { 5, 6 };
        var options = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 5 };
        using var images = _model.GenerateTensor(seeds, options);
        CollectionAssert.AreEqual(new long[] { 2, 1, 16, 16 }, images.shape);

        // The same by hand: DDIM without clipping on the latent grid, then D(z / s) clamped to [-1, 1].
        var scheduler = SchedulerFactory.Create(_model.Schedule, new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 5, ClipSample = false });
        using var z = DiffusionSampler.Sample((x, t) => _model.Pipeline.NetworkForward(x, t, null), scheduler, seeds, new long[] { 4, 8, 8 }, _model.Device);
        using var scaled = z / _model.Latent!.ScaleFactor;
        using var decoded = _autoencoder.Decode(scaled);
        using var expected = decoded.clamp(-1.0, 1.0);
        Assert.IsTrue(images.allclose(expected, rtol: 0, atol: 0), "GenerateTensor = clamp(Decode(z / scale))");
    }

    [TestMethod]
    public void ScaleFactorEqualsIndependentRecomputation()
    {
        // 1 / std of the posterior means of the first BatchSize (8) rows in input order (unbiased std, float64).
        using var x = ImageTensorConverter.ToTensor(_rows.Take(8).Select(r => r.Image).ToList(), 1);
        using var mean = _autoencoder.Encode(x);
        var v = mean.data<float>().ToArray().Select(f => (double)f).ToArray();
        double mu = v.Average();
        double std = Math.Sqrt(v.Sum(a => (a - mu) * (a - mu)) / (v.Length - 1));
        Assert.AreEqual(1.0 / std, _model.Latent!.ScaleFactor, 1e-6 / std);
        Assert.AreEqual(2, _model.Latent.DownsamplingFactor);
        Assert.AreEqual(4, _model.Latent.LatentChannels);
    }

    [TestMethod]
    public void SaveLoadPutsBothModelsInOneZipAndGivesIdenticalOutput()
    {
        string path = Path.Combine(Path.GetTempPath(), $"latent-{Guid.NewGuid():N}.zip");
        try
        {
            _ml.Model.Save(_model, _data.Schema, path);
            using (var zip = System.IO.Compression.ZipFile.OpenRead(path))
                Assert.IsTrue(zip.Entries.Any(e => e.FullName.Contains("Autoencoder", StringComparison.Ordinal)), "the autoencoder is nested in the zip");
            using var loaded = (DiffusionModel)_ml.Model.Load(path, out _);
            Assert.IsNotNull(loaded.Autoencoder);
            Assert.AreEqual(_model.Config.ToJson(), loaded.Config.ToJson());
            var options = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 4, Seed = 11 };
            var a = _model.Generate(3, options).Select(TestData.Pixels).ToList();
            var b = loaded.Generate(3, options).Select(TestData.Pixels).ToList();
            for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(a[i], b[i], $"image {i} differs after save/load");
            using var x = ImageTensorConverter.ToTensor(_rows.Take(2).Select(r => r.Image).ToList(), 1);
            using var z1 = _autoencoder.Encode(x);
            using var z2 = loaded.Autoencoder!.Encode(x);
            Assert.IsTrue(z1.allclose(z2, rtol: 0, atol: 0));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void ConditionalLatentModelSavesAndLoadsWithIdenticalGuidedOutput()
    {
        var o = LatentOptions(_autoencoder);
        o.MaxSteps = 2;
        o.LabelColumnName = "Label";
        o.NumClasses = 24;
        using var conditional = _ml.Generative.Diffusion(o).Fit(_data);
        Assert.AreEqual(24, conditional.NumClasses);
        string path = Path.Combine(Path.GetTempPath(), $"latent-cond-{Guid.NewGuid():N}.zip");
        try
        {
            _ml.Model.Save(conditional, _data.Schema, path);
            using var loaded = (DiffusionModel)_ml.Model.Load(path, out _);
            var options = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 3, Seed = 2, GuidanceScale = 3f };
            var labels = new[] { 0, 5, 23 };
            var a = conditional.Generate(labels, options).Select(TestData.Pixels).ToList();
            var b = loaded.Generate(labels, options).Select(TestData.Pixels).ToList();
            Assert.IsTrue(a.All(p => p.Length == 4 * 16 * 16), "full-size images");
            for (int i = 0; i < 3; i++) CollectionAssert.AreEqual(a[i], b[i], $"label {labels[i]}: image differs after save/load");
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>SDEdit on a latent model noises and denoises z = s E(x), then decodes: strength 0 gives D(s E(x) / s) clamped, strength 1
    /// gives generation from the rows' seeds, a middle strength samples the 4x8x8 latents (Meng et al. 2022 as in latent diffusion's img2img).</summary>
    [TestMethod]
    public void ImageToImageEncodesNoisesAndDecodesTheLatents()
    {
        var data = _ml.Data.LoadFromEnumerable(_rows.Take(2).ToList());
        ImageToImageOptions Options(float strength) =>
            new() { Strength = strength, Sampler = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 6, Seed = 3 } };
        List<byte[]> Edit(float strength) => _ml.Generative.ImageToImage(_model, "Edited", "Image", Options(strength)).Fit(data).Transform(data)
            .GetColumn<MLImage>("Edited").Select(TestData.Pixels).ToList();

        using var x = ImageTensorConverter.ToTensor(_rows.Take(2).Select(r => r.Image).ToList(), 1);
        double s = _model.Latent!.ScaleFactor;
        using var z = Sampling.LatentCodec.ToLatent(_autoencoder, x, s);
        using var roundTrip = Sampling.LatentCodec.ToImage(_autoencoder, z, s);
        var expected = ImageTensorConverter.ToBgraPixels(roundTrip);
        var unchanged = Edit(0f);
        for (int r = 0; r < 2; r++) CollectionAssert.AreEqual(expected[r], unchanged[r], $"row {r}: strength 0 is the autoencoder's round trip");

        var generated = _model.Generate(2, Options(1f).Sampler).Select(TestData.Pixels).ToList();
        var full = Edit(1f);
        for (int r = 0; r < 2; r++) CollectionAssert.AreEqual(generated[r], full[r], $"row {r}: strength 1 is generation");
        var middle = Edit(0.5f);
        Assert.IsTrue(middle.Select((p, r) => !p.SequenceEqual(unchanged[r]) && !p.SequenceEqual(full[r])).All(b => b), "strength 0.5 samples");
    }

    [TestMethod]
    public void InpaintInLatentSpaceKeepsTheKnownPixels()
    {
        var data = _ml.Data.LoadFromEnumerable(_rows.Take(2).ToList());
        var options = new InpaintOptions { Mask = InpaintMaskKind.Half, Steps = 6, JumpLength = 2, Resamplings = 2, Seed = 4, BatchSize = 2 };
        var output = _ml.Generative.Inpaint(_model, "Filled", "Image", null, options).Fit(data).Transform(data);
        Assert.AreEqual(new ImageDataViewType(16, 16), output.Schema["Filled"].Type);
        var filled = output.GetColumn<MLImage>("Filled").ToList();
        var mask = InpaintMasks.Create(InpaintMaskKind.Half, 16, 4);
        for (int r = 0; r < 2; r++)
        {
            var got = TestData.Pixels(filled[r]);
            var original = TestData.Pixels(_rows[r].Image);
            int kept = 0;
            for (int p = 0; p < 256; p++)
                if (mask[p])
                {
                    Assert.AreEqual(original[4 * p], got[4 * p], $"row {r}, known pixel {p} changed");
                    kept++;
                }
            Assert.IsTrue(kept > 0 && kept < 256);
        }
    }

    [TestMethod]
    public void UpscaleInLatentSpaceKeepsTheGridPixelsAndRejectsSmallFactors()
    {
        var rows = Enumerable.Range(0, 2).Select(i => new SmallRow { Small = TestData.Gray(4, (x, y) => (byte)(30 + 40 * x + 10 * y + i)), Label = (uint)i }).ToList();
        var data = _ml.Data.LoadFromEnumerable(rows);
        var options = new UpscaleOptions { Factor = 4, Steps = 6, JumpLength = 2, Resamplings = 2, Seed = 8, BatchSize = 2 };
        var output = _ml.Generative.Upscale(_model, "Big", "Small", options).Fit(data).Transform(data);
        var big = output.GetColumn<MLImage>("Big").ToList();
        for (int r = 0; r < 2; r++)
        {
            Assert.AreEqual(16, big[r].Width);
            var px = TestData.Pixels(big[r]);
            var small = TestData.Pixels(rows[r].Small);
            for (int y = 0; y < 4; y++)
                for (int x = 0; x < 4; x++)
                    Assert.AreEqual(small[4 * (4 * y + x)], px[4 * (16 * 4 * y + 4 * x)], $"row {r}: grid pixel ({x}, {y})");
        }
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => _ml.Generative.Upscale(_model, "Big", "Small", new UpscaleOptions { Factor = 2 }));
        StringAssert.Contains(e.Message, "autoencoder factor 2");
    }

    [TestMethod]
    public void MismatchedAutoencoderAndUnsupportedCombinationsAreRejected()
    {
        var wrongSize = LatentOptions(_autoencoder);
        wrongSize.ImageSize = 8;
        var e = Assert.ThrowsExactly<ArgumentException>(() => _ml.Generative.Diffusion(wrongSize));
        StringAssert.Contains(e.Message, "Autoencoder encodes 1-channel 16x16 images");

        var selfConditioned = LatentOptions(_autoencoder);
        selfConditioned.SelfConditioning = true;
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => _ml.Generative.Diffusion(selfConditioned)).Message, "SelfConditioning");
    }
}
