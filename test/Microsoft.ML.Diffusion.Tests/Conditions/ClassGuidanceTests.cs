using Microsoft.ML.Diffusion.Conditions;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Training;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Conditions;

/// <summary>The class embedding, classifier-free guidance (Ho &amp; Salimans 2022) and label dropping, on the network level.</summary>
[TestClass]
public class ClassGuidanceTests
{
    private static UNetConfig Tiny(int numClasses, int outChannels = 1) => new()
    {
        ImageSize = 8, InChannels = 1, OutChannels = outChannels, BaseChannels = 8, ChannelMultipliers = new[] { 1, 2 },
        AttentionResolutions = new[] { 4 }, NumResBlocks = 1, GroupNormGroups = 4, NumClasses = numClasses,
    };

    private static UNet Network(int numClasses, int outChannels = 1)
    {
        lock (DiffusionTrainer.TorchGlobalSeed)
        {
            manual_seed(11);
            return new UNet(Tiny(numClasses, outChannels));
        }
    }

    /// <summary>The last convolution of every residual block and the output convolution start at zero (DDPM), which hides
    /// the time and class embeddings at initialisation; give every all-zero parameter small random values.</summary>
    private static void PerturbOutput(UNet net)
    {
        using var noGrad = no_grad();
        var g = new TorchSharp.torch.Generator(4);
        foreach (var (_, p) in net.named_parameters())
            if (p.abs().max().item<float>() == 0f) p.copy_(randn(p.shape, generator: g) * 0.1f);
    }

    [TestMethod]
    public void TheClassEmbeddingAddsNumClassesPlusOneRowsAndKeepsTheOtherWeights()
    {
        using var plain = Network(0);
        using var conditional = Network(5);
        int tdim = 4 * 8;
        Assert.AreEqual(plain.ParameterCount + 6 * tdim, conditional.ParameterCount);
        var a = plain.state_dict();
        var b = conditional.state_dict();
        Assert.AreEqual(a.Count + 1, b.Count);
        foreach (var (name, w) in a)
            Assert.IsTrue(w.allclose(b[name], 0, 0), $"{name}: created last, the class embedding leaves the other initial weights unchanged");
        Assert.AreEqual(5, conditional.NullLabel);
    }

    [TestMethod]
    public void LabelsChangeTheOutputAndNoLabelsMeanTheNullLabel()
    {
        using var net = Network(5);
        PerturbOutput(net);
        net.eval();
        using var noGrad = no_grad();
        using var x = randn(3, 1, 8, 8, generator: new TorchSharp.torch.Generator(1));
        using var t = tensor(new long[] { 10, 20, 30 });
        using var y1 = tensor(new long[] { 0, 1, 2 });
        using var y2 = tensor(new long[] { 3, 4, 0 });
        using var nulls = tensor(new long[] { 5, 5, 5 });
        using var o1 = net.forward(x, t, y1);
        using var o2 = net.forward(x, t, y2);
        using var oNull = net.forward(x, t, nulls);
        using var oNone = net.forward(x, t);
        Assert.IsTrue(oNull.allclose(oNone, 0, 0), "no labels = the null label");
        for (int i = 0; i < 3; i++)
        {
            float diff = (o1[i] - o2[i]).abs().max().item<float>();
            Assert.IsGreaterThan(1e-4f, diff, $"image {i}: another label, another output");
        }
        using var plain = Network(0);
        plain.eval();
        var e = Assert.ThrowsExactly<ArgumentException>(() => plain.forward(x, t, y1));
        StringAssert.Contains(e.Message, "unconditional");
    }

    [TestMethod]
    public void GuideCombinesThePredictionChannelsAndKeepsTheConditionalVariance()
    {
        using var cond = randn(2, 2, 4, 4, generator: new TorchSharp.torch.Generator(2));
        using var uncond = randn(2, 2, 4, 4, generator: new TorchSharp.torch.Generator(3));
        using var guided = ConditionedNetwork.Guide(cond, uncond, 3f, predictionChannels: 1);
        var c = cond.data<float>().ToArray();
        var u = uncond.data<float>().ToArray();
        var g = guided.data<float>().ToArray();
        for (int i = 0; i < g.Length; i++)
        {
            int channel = i / 16 % 2;
            double expected = channel == 0 ? u[i] + 3.0 * (c[i] - u[i]) : c[i];   // eq. 6 on eps; variance from the conditional branch
            Assert.AreEqual(expected, g[i], 1e-5, $"element {i} (channel {channel})");
        }
    }

    [TestMethod]
    public void GuidedForwardIsOneBatchOfTwoBEqualToSeparateBranches()
    {
        using var net = Network(5, outChannels: 2);
        PerturbOutput(net);
        net.eval();
        var batches = new List<long[]>();
        Tensor Counting(Tensor x, Tensor t, Tensor? y)
        {
            batches.Add(new[] { x.shape[0], t.shape[0], y?.shape[0] ?? -1 });
            return net.forward(x, t, y);
        }

        using var noGrad = no_grad();
        using var x = randn(3, 1, 8, 8, generator: new TorchSharp.torch.Generator(5));
        using var t = tensor(new long[] { 7, 7, 7 });
        using var labels = tensor(new long[] { 0, 2, 4 });
        using var nulls = tensor(new long[] { 5, 5, 5 });
        using var guidedNet = new ConditionedNetwork(Counting, null, CPU, labels, guidanceScale: 2.5f, nullLabel: 5, predictionChannels: 1);
        using var guided = guidedNet.Forward(x, t);
        Assert.HasCount(1, batches);
        CollectionAssert.AreEqual(new long[] { 6, 6, 6 }, batches[0], "one forward pass of 2B images");

        using var cond = net.forward(x, t, labels);
        using var uncond = net.forward(x, t, nulls);
        Assert.IsGreaterThan(1e-4f, (cond - uncond).abs().max().item<float>(), "the labels matter");
        using var expectedEps = uncond.narrow(1, 0, 1) + 2.5f * (cond.narrow(1, 0, 1) - uncond.narrow(1, 0, 1));
        Assert.IsTrue(guided.narrow(1, 0, 1).allclose(expectedEps, 1e-5, 1e-5), "eps_u + w (eps_c - eps_u)");
        Assert.IsTrue(guided.narrow(1, 1, 1).allclose(cond.narrow(1, 1, 1), 1e-5, 1e-5), "variance channels from the conditional branch");

        batches.Clear();
        using var plainNet = new ConditionedNetwork(Counting, null, CPU, labels, guidanceScale: 1f, nullLabel: 5, predictionChannels: 1);
        using var one = plainNet.Forward(x, t);
        using var zeroNet = new ConditionedNetwork(Counting, null, CPU, labels, guidanceScale: 0f, nullLabel: 5, predictionChannels: 1);
        using var zero = zeroNet.Forward(x, t);
        CollectionAssert.AreEqual(new long[] { 3, 3, 3 }, batches[0], "w = 1: the conditional branch alone");
        CollectionAssert.AreEqual(new long[] { 3, 3, 3 }, batches[1], "w = 0: the unconditional branch alone");
        Assert.IsTrue(one.allclose(cond, 1e-6, 1e-6));
        Assert.IsTrue(zero.allclose(uncond, 1e-6, 1e-6));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new ConditionedNetwork(Counting, null, CPU, labels, guidanceScale: -1f, nullLabel: 5));
    }

    [TestMethod]
    public void DropProbabilityOneTrainsTheNullLabel()
    {
        // With p_uncond = 1 every label is replaced by the null label (Ho & Salimans 2022, algorithm 1), so the step equals
        // a step on null labels; with p_uncond = 0 the labels are kept, which gives another loss.
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 50);
        using var x0 = rand(4, 1, 8, 8, generator: new TorchSharp.torch.Generator(6)) * 2 - 1;
        using var labels = tensor(new long[] { 0, 1, 2, 3 });
        using var nulls = tensor(new long[] { 5, 5, 5, 5 });
        float Step(double p, Tensor y)
        {
            using var model = Network(5);
            using var ema = Network(5);
            PerturbOutput(model);     // identically in every run, so that the labels reach the loss
            using var loop = new DiffusionTrainingLoop(model, ema, schedule,
                new TrainingSettings { Seed = 3, NumClasses = 5, ConditionDropProbability = p }, CPU);
            return loop.TrainStep(x0, y);
        }

        float dropped = Step(1.0, labels);
        float onNulls = Step(0.0, nulls);
        float kept = Step(0.0, labels);
        Assert.AreEqual(onNulls, dropped, 0f, "p = 1: every label became the null label");
        Assert.AreNotEqual(kept, dropped, "the labels change the loss");
    }

    [TestMethod]
    public void TheTrainingLoopChecksLabels()
    {
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 50);
        using var model = Network(5);
        using var ema = Network(5);
        using var loop = new DiffusionTrainingLoop(model, ema, schedule, new TrainingSettings { NumClasses = 5 }, CPU);
        using var x0 = zeros(2, 1, 8, 8);
        Assert.ThrowsExactly<ArgumentNullException>(() => loop.TrainStep(x0));
        using var bad = tensor(new long[] { 0, 6 });
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => loop.TrainStep(x0, bad));
        StringAssert.Contains(e.Message, "0..4");
        Assert.ThrowsExactly<ArgumentException>(() =>
            new DiffusionTrainingLoop(model, ema, schedule, new TrainingSettings { NumClasses = 3 }, CPU));
    }
}
