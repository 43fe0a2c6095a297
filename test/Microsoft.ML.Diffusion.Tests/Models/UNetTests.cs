using Microsoft.ML.Diffusion.Models;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Models;

[TestClass]
public class UNetTests
{
    private static UNetConfig Tiny(int size = 8, int inCh = 1, int outCh = 1, int[]? attention = null) => new()
    {
        ImageSize = size, InChannels = inCh, OutChannels = outCh, BaseChannels = 8, ChannelMultipliers = new[] { 1, 2 },
        NumResBlocks = 1, AttentionResolutions = attention ?? new[] { size / 2 }, GroupNormGroups = 4, AttentionHeads = 2,
    };

    [TestMethod]
    [DataRow(8, 1, 1, true)]
    [DataRow(8, 3, 3, true)]
    [DataRow(16, 1, 2, false)]
    [DataRow(16, 3, 6, true)]
    public void OutputHasTheInputsSpatialShape(int size, int inCh, int outCh, bool attention)
    {
        using var net = new UNet(Tiny(size, inCh, outCh, attention ? new[] { size / 2 } : Array.Empty<int>()));
        using var x = randn(3, inCh, size, size);
        using var t = tensor(new long[] { 0, 10, 49 });
        using var y = net.forward(x, t);
        CollectionAssert.AreEqual(new long[] { 3, outCh, size, size }, y.shape);
        Assert.IsFalse(y.isnan().any().item<bool>());
    }

    [TestMethod]
    public void DefaultConfigMatchesTheReferenceArchitecture()
    {
        // DESIGN.md section 3: 1x28x28, base 32, mults 1,2,2, 2 res blocks down / 3 up, GroupNorm 8, attention at 7x7:
        // about 1.62 M parameters and 0.55 GFLOP per image forward.
        using var net = new UNet(new UNetConfig());
        Assert.AreEqual(1_623_169L, net.ParameterCount);
        Assert.AreEqual(0.55, net.ForwardFlopsPerImage() / 1e9, 0.01);
        using var y = net.forward(zeros(2, 1, 28, 28), tensor(new long[] { 1, 999 }));
        CollectionAssert.AreEqual(new long[] { 2, 1, 28, 28 }, y.shape);
    }

    [TestMethod]
    public void GroupNormLayersStartAtOneAndZero()
    {
        using var net = new UNet(Tiny());
        var norms = net.named_parameters().Where(p => p.name.Contains("norm")).ToList();
        Assert.IsTrue(norms.Count > 0);
        foreach (var (name, p) in norms)
        {
            float expected = name.EndsWith("weight") ? 1f : 0f;
            Assert.AreEqual(0f, (p - expected).abs().max().item<float>(), $"{name} is not initialised to {expected}");
        }
    }

    [TestMethod]
    public void TimeEmbeddingFollowsTheSinusoidalFormula()
    {
        using var t = tensor(new long[] { 0, 7, 500 });
        using var emb = TimestepEmbedding.Sinusoidal(t, 8);
        var values = emb.data<float>().ToArray();
        for (int row = 0; row < 3; row++)
        {
            double time = new[] { 0, 7, 500 }[row];
            for (int i = 0; i < 4; i++)
            {
                double freq = Math.Exp(-Math.Log(10000) * i / 4);
                Assert.AreEqual(Math.Sin(time * freq), values[row * 8 + i], 1e-4);
                Assert.AreEqual(Math.Cos(time * freq), values[row * 8 + 4 + i], 1e-4);
            }
        }
    }

    [TestMethod]
    public void OutputDependsOnTheTimestepAfterTraining()
    {
        // The output convolution starts at zero (so every output starts at 0); after a few steps the network is
        // time-conditioned: the same x_t at two timesteps gives two predictions.
        manual_seed(5);
        using var net = new UNet(Tiny());
        var opt = optim.AdamW(net.parameters(), lr: 1e-3);
        using var x = randn(4, 1, 8, 8);
        for (int i = 0; i < 5; i++)
        {
            using var scope = NewDisposeScope();
            opt.zero_grad();
            nn.functional.mse_loss(net.forward(x, tensor(new long[] { 1, 2, 30, 40 })), x).backward();
            opt.step();
        }
        using var a = net.forward(x, full(new long[] { 4 }, 3L, int64));
        using var b = net.forward(x, full(new long[] { 4 }, 45L, int64));
        Assert.IsTrue((a - b).abs().max().item<float>() > 1e-4);
    }

    [TestMethod]
    public void FewAdamWStepsLowerTheNoisePredictionLoss()
    {
        manual_seed(11);
        using var net = new UNet(Tiny());
        var opt = optim.AdamW(net.parameters(), lr: 1e-3);
        using var x0 = rand(8, 1, 8, 8) * 2 - 1;
        using var eps = randn(8, 1, 8, 8);
        using var t = randint(0, 50, new long[] { 8 });
        using var xt = x0 * 0.7 + eps * 0.71;
        float first = 0, last = 0;
        for (int i = 0; i < 20; i++)
        {
            using var scope = NewDisposeScope();
            opt.zero_grad();
            var loss = nn.functional.mse_loss(net.forward(xt, t), eps);
            loss.backward();
            opt.step();
            if (i == 0) first = loss.item<float>();
            last = loss.item<float>();
        }
        Assert.IsTrue(last < 0.8 * first, $"loss {first} -> {last}");
    }

    [TestMethod]
    public void SameSeedSameWeights()
    {
        manual_seed(3);
        using var a = new UNet(Tiny());
        manual_seed(3);
        using var b = new UNet(Tiny());
        foreach (var (pa, pb) in a.parameters().Zip(b.parameters()))
            Assert.IsTrue(pa.allclose(pb, rtol: 0, atol: 0));
    }

    [TestMethod]
    public void StateDictRoundTripGivesIdenticalOutput()
    {
        manual_seed(4);
        using var a = new UNet(Tiny());
        using (no_grad()) foreach (var p in a.parameters()) p.add_(randn_like(p) * 0.1); // leave the zero init
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) a.save(w);
        ms.Position = 0;
        manual_seed(99);
        using var b = new UNet(Tiny());
        using (var r = new BinaryReader(ms)) b.load(r);
        using var x = randn(2, 1, 8, 8);
        using var t = tensor(new long[] { 3, 40 });
        using var ya = a.forward(x, t);
        using var yb = b.forward(x, t);
        Assert.IsTrue(ya.allclose(yb, rtol: 0, atol: 0));
    }

    [TestMethod]
    public void InvalidConfigsNameThePropertyAndValue()
    {
        var e1 = Assert.Throws<ArgumentException>(() => new UNetConfig { ImageSize = 10, ChannelMultipliers = new[] { 1, 2, 2 }, AttentionResolutions = Array.Empty<int>() }.Validate());
        StringAssert.Contains(e1.Message, "ImageSize is 10");
        var e2 = Assert.Throws<ArgumentException>(() => new UNetConfig { BaseChannels = 12, GroupNormGroups = 8 }.Validate());
        StringAssert.Contains(e2.Message, "GroupNormGroups is 8");
        var e3 = Assert.Throws<ArgumentException>(() => new UNetConfig { AttentionResolutions = new[] { 5 } }.Validate());
        StringAssert.Contains(e3.Message, "AttentionResolutions is 5");
        StringAssert.Contains(e3.Message, "28, 14, 7");
    }

    [TestMethod]
    public void ConfigEqualityComparesArraysByContent()
    {
        var a = new UNetConfig { ChannelMultipliers = new[] { 1, 2 }, AttentionResolutions = new[] { 14 } };
        var b = new UNetConfig { ChannelMultipliers = new[] { 1, 2 }, AttentionResolutions = new[] { 14 } };
        Assert.AreEqual(a, b);
        Assert.AreEqual(a.GetHashCode(), b.GetHashCode());
        Assert.AreNotEqual(a, b with { ChannelMultipliers = new[] { 1, 3 } });
    }
}
