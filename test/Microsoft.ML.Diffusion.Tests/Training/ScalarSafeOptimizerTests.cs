using Microsoft.ML.Diffusion.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Training;

/// <summary>The scalar-safe Adam/AdamW compute TorchSharp's updates bit for bit and share its checkpoint format.</summary>
[TestClass]
public class ScalarSafeOptimizerTests
{
    private static nn.Module<Tensor, Tensor> Net()
    {
        manual_seed(7);
        return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3));
    }

    private static void Step(nn.Module<Tensor, Tensor> net, OptimizerHelper optimizer, int seed, double lr)
    {
        foreach (var g in optimizer.ParamGroups) g.LearningRate = lr;
        using var scope = NewDisposeScope();
        var gen = new Generator((ulong)seed, CPU);
        var x = randn(new long[] { 4, 6 }, generator: gen);
        optimizer.zero_grad();
        net.call(x).pow(2).mean().backward();
        optimizer.step();
    }

    private static byte[] Bytes(nn.Module net) =>
        net.parameters().SelectMany(p => p.detach().cpu().data<float>().ToArray()).SelectMany(BitConverter.GetBytes).ToArray();

    [TestMethod]
    public void AdamWAndAdamMatchTorchSharpBitForBitAndShareCheckpoints()
    {
        foreach (bool decoupled in new[] { true, false })
        {
            using var a = Net();
            using var b = Net();
            var pa = a.parameters().ToArray();
            var pb = b.parameters().ToArray();
            OptimizerHelper stock = decoupled ? optim.AdamW(pa, lr: 1e-2, weight_decay: 0.05) : optim.Adam(pa, lr: 1e-2);
            OptimizerHelper safe = decoupled ? ScalarSafeOptimizers.AdamW(pb, 1e-2, 0.05) : ScalarSafeOptimizers.Adam(pb, 1e-2);
            for (int s = 0; s < 5; s++)
            {
                Step(a, stock, s, 1e-2 * (s + 1) / 5);
                Step(b, safe, s, 1e-2 * (s + 1) / 5);
            }
            CollectionAssert.AreEqual(Bytes(a), Bytes(b), $"decoupled = {decoupled}: weights after 5 steps");

            // A checkpoint of either loads into the other and the runs continue identically.
            using var stream = new MemoryStream();
            using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true)) stock.save_state_dict(writer);
            stream.Position = 0;
            using var c = Net();
            foreach (var (dst, src) in c.parameters().Zip(pa)) using (no_grad()) dst.copy_(src);
            OptimizerHelper resumed = decoupled ? ScalarSafeOptimizers.AdamW(c.parameters(), 1e-2, 0.05) : ScalarSafeOptimizers.Adam(c.parameters(), 1e-2);
            using (var reader = new BinaryReader(stream)) resumed.load_state_dict(reader);
            for (int s = 5; s < 8; s++)
            {
                Step(a, stock, s, 3e-3);
                Step(c, resumed, s, 3e-3);
            }
            CollectionAssert.AreEqual(Bytes(a), Bytes(c), $"decoupled = {decoupled}: weights after resuming from the stock optimizer's state");
            ((IDisposable)stock).Dispose();
            ((IDisposable)safe).Dispose();
            ((IDisposable)resumed).Dispose();
        }
    }

    [TestMethod]
    public void ALibtorchErrorInAStepIsRetriedAndThrownWhenItRepeats()
    {
        var config = new Diffusion.UNetConfig { ImageSize = 8, BaseChannels = 8, ChannelMultipliers = new[] { 1 }, AttentionResolutions = Array.Empty<int>(), NumResBlocks = 1, GroupNormGroups = 4 };
        using var model = new Diffusion.Models.UNet(config);
        using var ema = new Diffusion.Models.UNet(config);
        using var loop = new DiffusionTrainingLoop(model, ema, new Diffusion.Schedules.DiffusionSchedule(NoiseSchedule.Linear, 50), new TrainingSettings { Seed = 1 }, CPU);
        var before = Bytes(model);
        // Two channels into a one-channel network: a libtorch error on every attempt, so it is real and surfaces.
        using var wrong = rand(4, 2, 8, 8);
        Assert.ThrowsExactly<System.Runtime.InteropServices.ExternalException>(() => loop.TrainStep(wrong));
        Assert.AreEqual(2, loop.Retries);
        Assert.IsNotNull(loop.LastRetryReason);
        Assert.AreEqual(0L, loop.Step);
        CollectionAssert.AreEqual(before, Bytes(model), "a failed step changed the weights");
        using var good = rand(4, 1, 8, 8) * 2 - 1;
        Assert.IsTrue(float.IsFinite(loop.TrainStep(good)));
        Assert.AreEqual(1L, loop.Step);
    }
}
