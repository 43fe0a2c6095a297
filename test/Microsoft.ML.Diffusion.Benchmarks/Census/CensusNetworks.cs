using Microsoft.ML.Diffusion.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Benchmarks.Census;

/// <summary>
/// The networks the library trains, at the sizes users and tests train them, and the layer shapes each one runs:
/// found by running one training step (forward and backward) with forward hooks on every convolution, linear and
/// normalisation layer.
/// </summary>
internal static class CensusNetworks
{
    /// <summary>A network, built at its census size, and one training step's forward on a random batch.</summary>
    private sealed record Scenario(string Name, Func<nn.Module> Build, Func<nn.Module, Tensor> Step);

    private static UNetConfig Tiny(int inCh = 1, int outCh = 1, int classes = 0) => new()
    {
        ImageSize = 8, InChannels = inCh, OutChannels = outCh, BaseChannels = 8, ChannelMultipliers = new[] { 1, 2 },
        NumResBlocks = 1, AttentionResolutions = new[] { 4 }, GroupNormGroups = 4, AttentionHeads = 2, NumClasses = classes,
    };

    private static Scenario UNetScenario(string name, UNetConfig config, int batch) => new(name, () => new UNet(config), m =>
    {
        var x = randn(batch, config.InChannels, config.ImageSize, config.ImageSize);
        var t = randint(0, 1000, new long[] { batch }, dtype: int64);
        var y = config.NumClasses > 0 ? randint(0, config.NumClasses + 1, new long[] { batch }, dtype: int64) : null;
        return ((UNet)m).forward(x, t, y);
    });

    private static IEnumerable<Scenario> Scenarios()
    {
        var bundled = new UNetConfig();   // the bundled Fashion-MNIST models: 28x28, base 32, mults 1,2,2, attention at 7
        yield return UNetScenario("U-Net 28 (bundled), batch 64", bundled, 64);
        yield return UNetScenario("U-Net 28 learned variance", bundled with { OutChannels = 2 }, 64);
        yield return UNetScenario("U-Net 28 SR3 / self-conditioning (2 input channels)", bundled with { InChannels = 2 }, 64);
        yield return UNetScenario("U-Net 28 class-conditional", bundled with { NumClasses = 10 }, 64);
        yield return UNetScenario("U-Net 8 (tests), batch 8", Tiny(), 8);
        yield return UNetScenario("U-Net 8 RGB learned variance (tests)", Tiny(3, 6), 4);
        var autoencoder = new AutoencoderConfig();  // 32x32 RGB, 4 latent channels, factor 4
        yield return new Scenario("Autoencoder 32 RGB f4, batch 16", () => new KlAutoencoder(autoencoder), m =>
        {
            var (mean, _) = ((KlAutoencoder)m).Encode(randn(16, autoencoder.Channels, autoencoder.ImageSize, autoencoder.ImageSize));
            return ((KlAutoencoder)m).Decode(mean);
        });
        yield return UNetScenario("Latent U-Net 8x8x4, batch 64", bundled with
        {
            ImageSize = autoencoder.LatentSize, InChannels = autoencoder.LatentChannels, OutChannels = autoencoder.LatentChannels,
            ChannelMultipliers = new[] { 1, 2 }, AttentionResolutions = new[] { 4 },
        }, 64);
        var classifier = new NoisyClassifierConfig();
        yield return new Scenario("Noisy classifier 28, batch 64", () => new NoisyClassifierNetwork(classifier), m =>
            ((NoisyClassifierNetwork)m).forward(randn(64, classifier.InChannels, classifier.ImageSize, classifier.ImageSize),
                randint(0, 1000, new long[] { 64 }, dtype: int64)));
    }

    /// <summary>Every layer shape of every scenario, merged (a shape used by several networks lists them all).</summary>
    public static List<LayerShape> CollectShapes()
    {
        var shapes = new Dictionary<string, LayerShape>();
        foreach (var scenario in Scenarios())
        {
            manual_seed(1);
            using var network = scenario.Build();
            var removers = new List<Action>();
            void Record(LayerShape shape)
            {
                if (shapes.TryGetValue(shape.Key, out var known)) { if (!known.Networks.Contains(scenario.Name)) known.Networks.Add(scenario.Name); }
                else shapes[shape.Key] = shape with { Networks = new List<string> { scenario.Name } };
            }
            foreach (var module in network.modules())
            {
                switch (module)
                {
                    case Conv2d conv:
                        removers.Add(conv.register_forward_hook((m, x, y) =>
                        {
                            var w = conv.weight!.shape;
                            Record(new LayerShape(LayerKind.Conv, (int)w[1], (int)w[0], (int)w[2], StrideOf(x, y), 0, x.shape, new()));
                            return y;
                        }).remove);
                        break;
                    case PaddedConv2d padded:
                        removers.Add(padded.register_forward_hook((m, x, y) =>
                        {
                            var w = padded.Weight.shape;
                            Record(new LayerShape(LayerKind.PaddedConv, (int)w[1], (int)w[0], (int)w[2], StrideOf(x, y), 0, x.shape, new()));
                            return y;
                        }).remove);
                        break;
                    case Models.Upsample up when up.named_children().Select(c => c.module).OfType<Conv2d>().FirstOrDefault() is { } plain:
                        // The phase convolution runs inside Upsample.forward, not through the Conv2d module: hook the block.
                        removers.Add(up.register_forward_hook((m, x, temb, y) =>
                        {
                            var w = plain.weight!.shape;
                            Record(new LayerShape(LayerKind.UpsampleConv, (int)w[1], (int)w[0], 3, 1, 0, x.shape, new()));
                            return y;
                        }).remove);
                        break;
                    case Linear linear:
                        removers.Add(linear.register_forward_hook((m, x, y) =>
                        {
                            var w = linear.weight!.shape;
                            Record(new LayerShape(LayerKind.Linear, (int)w[1], (int)w[0], 0, 1, 0, x.shape, new()));
                            return y;
                        }).remove);
                        break;
                    case GroupNorm norm:
                        removers.Add(norm.register_forward_hook((m, x, y) =>
                        {
                            Record(new LayerShape(LayerKind.GroupNorm, (int)x.shape[1], (int)x.shape[1], 0, 1, (int)norm.num_groups, x.shape, new()));
                            return y;
                        }).remove);
                        break;
                }
            }
            using (var scope = NewDisposeScope())
            {
                var output = scenario.Step(network);
                output.square().mean().backward();
            }
            foreach (var remove in removers) remove();
        }
        return shapes.Values.OrderBy(s => s.Kind).ThenBy(s => s.In).ThenBy(s => s.Out).ThenBy(s => s.Key, StringComparer.Ordinal).ToList();
    }

    /// <summary>The stride of a convolution with padding kernel / 2, from its input and output sides.</summary>
    private static int StrideOf(Tensor x, Tensor y) => x.shape[2] == y.shape[2] ? 1 : (int)Math.Round((double)x.shape[2] / y.shape[2]);
}
