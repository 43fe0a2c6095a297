using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Training;

/// <summary>Offset noise (Guttenberg 2023): the training noise is randn(x) + offset * randn(B, C, 1, 1), and 0 draws exactly the old noise.</summary>
[TestClass]
public class OffsetNoiseTests
{
    private static readonly long[] Shape = { 3, 2, 4, 5 };

    [TestMethod]
    public void TheNoiseIsGaussianPlusAPerChannelConstant()
    {
        using var g = new TorchSharp.torch.Generator(21);
        using var noise = DiffusionTrainingLoop.TrainingNoise(Shape, 0.3, g);
        // The same generator stream, drawn as the definition says: randn(B, C, H, W), then randn(B, C, 1, 1).
        using var reference = new TorchSharp.torch.Generator(21);
        using var gaussian = randn(Shape, dtype: float32, generator: reference).to_type(float64);
        using var offset = randn(new long[] { 3, 2, 1, 1 }, dtype: float32, generator: reference).to_type(float64);
        using var expected = gaussian + 0.3 * offset;
        Assert.AreEqual(0.0, (noise.to_type(float64) - expected).abs().max().item<double>(), 1e-6);
        // The shift is constant over each image's channel and differs between channels.
        using var shift = noise.to_type(float64) - gaussian;
        using var spread = shift.amax(new long[] { 2, 3 }) - shift.amin(new long[] { 2, 3 });
        Assert.IsLessThan(1e-6, spread.max().item<double>());
        var perChannel = shift.mean(new long[] { 2, 3 }).data<double>().ToArray();
        Assert.AreEqual(6, perChannel.Distinct().Count(), "one constant per image and channel");
    }

    [TestMethod]
    public void ZeroOffsetDrawsTheOldNoiseAndNothingMore()
    {
        using var g = new TorchSharp.torch.Generator(5);
        using var reference = new TorchSharp.torch.Generator(5);
        using var noise = DiffusionTrainingLoop.TrainingNoise(Shape, 0.0, g);
        using var plain = randn(Shape, dtype: float32, generator: reference);
        Assert.IsTrue(noise.equal(plain).all().item<bool>(), "bit-identical to randn(x)");
        // The generator has advanced exactly as far: the next draws agree too, so the rest of the step is unchanged.
        using var next = randn(7, generator: g);
        using var nextReference = randn(7, generator: reference);
        Assert.IsTrue(next.equal(nextReference).all().item<bool>());
    }

    [TestMethod]
    public void TheTrainingStepUsesIt()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 50);
        using var x0 = TestData.SquaresTensor(4);
        float Step(double offset)
        {
            UNet model, ema;
            lock (DiffusionTrainer.TorchGlobalSeed)
            {
                manual_seed(11);
                model = new UNet(TestData.TinyOptions().ToNetworkConfig());
                ema = new UNet(TestData.TinyOptions().ToNetworkConfig());
            }
            using (model)
            using (ema)
            using (var loop = new DiffusionTrainingLoop(model, ema, schedule, new TrainingSettings { Seed = 3, OffsetNoise = offset }, CPU))
                return loop.TrainStep(x0);
        }

        float plain = Step(0), again = Step(0), offset = Step(0.5);
        Assert.AreEqual(plain, again, 0f, "the step is reproducible");
        Assert.AreNotEqual(plain, offset, "the offset changes the noise the network is trained on");
    }

    [TestMethod]
    public void NegativeOrNonFiniteOffsetsAreRejected()
    {
        var ml = new MLContext(seed: 1);
        foreach (float bad in new[] { -0.1f, float.NaN, float.PositiveInfinity })
        {
            var options = TestData.TinyOptions();
            options.OffsetNoise = bad;
            var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Generative.Diffusion(options));
            StringAssert.Contains(e.Message, "OffsetNoise");
        }
    }
}
