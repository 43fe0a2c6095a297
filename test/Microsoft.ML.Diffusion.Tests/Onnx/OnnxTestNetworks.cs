using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.OnnxRuntime;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Tests.Onnx;

/// <summary>
/// What the ONNX tests share: tiny networks with every parameter drawn at random (the zero-initialised output, attention and
/// classifier-head layers would hide errors), and a plain ONNX Runtime run of an exported graph on TorchSharp tensors.
/// </summary>
internal static class OnnxTestNetworks
{
    /// <summary>The agreement of one network call, ONNX Runtime against TorchSharp (max abs, float32).</summary>
    public const float Tolerance = 1e-4f;

    /// <summary>Draws every parameter of <paramref name="module"/> from N(0, 0.3^2); GroupNorm scales from N(1, 0.3^2).</summary>
    public static void Randomize(nn.Module module, long seed)
    {
        var generator = new torch.Generator((ulong)seed);
        using (no_grad())
            foreach (var (name, p) in module.named_parameters())
            {
                using var noise = randn(p.shape, generator: generator) * 0.3;
                if (name.Contains("norm") && name.EndsWith("weight")) p.copy_(noise + 1.0);
                else p.copy_(noise);
            }
    }

    /// <summary>A tiny autoencoder: 8x8 images, factor 2 (latents 4x4), base 8, 4 groups.</summary>
    public static AutoencoderConfig TinyAutoencoder(int channels = 1, int latentChannels = 2, int factor = 2) => new()
    {
        ImageSize = 8, Channels = channels, LatentChannels = latentChannels, DownsamplingFactor = factor, BaseChannels = 8, NumResBlocks = 1,
        GroupNormGroups = 4, ChannelMultipliers = AutoencoderConfig.DefaultMultipliers(factor).ToArray(),
    };

    /// <summary>An autoencoder model around a randomised network of <paramref name="config"/>.</summary>
    public static AutoencoderModel RandomAutoencoder(AutoencoderConfig config, long seed = 5)
    {
        var network = new KlAutoencoder(config);
        Randomize(network, seed);
        return new AutoencoderModel(new MLContext(seed: 1), new AutoencoderModelConfig { Network = config }, network, CPU);
    }

    /// <summary>The network as ONNX bytes, written by <paramref name="export"/>.</summary>
    public static byte[] Export(Action<Stream> export)
    {
        using var stream = new MemoryStream();
        export(stream);
        return stream.ToArray();
    }

    /// <summary>Runs <paramref name="model"/> in a new session on <paramref name="inputs"/> (float32 or int64 CPU tensors; null
    /// ones left out) and returns <paramref name="output"/> as a tensor.</summary>
    public static Tensor Run(byte[] model, IEnumerable<(string Name, Tensor? Value)> inputs, string output)
    {
        using var session = new InferenceSession(model);
        return Run(session, inputs, output);
    }

    /// <summary>Runs <paramref name="session"/> on <paramref name="inputs"/> and returns <paramref name="output"/> as a tensor.</summary>
    public static Tensor Run(InferenceSession session, IEnumerable<(string Name, Tensor? Value)> inputs, string output)
    {
        var values = new Dictionary<string, OrtValue>();
        try
        {
            foreach (var (name, value) in inputs)
            {
                if (value is null) continue;
                values[name] = value.dtype == ScalarType.Int64
                    ? OrtValue.CreateTensorValueFromMemory(value.data<long>().ToArray(), value.shape)
                    : OrtValue.CreateTensorValueFromMemory(value.to_type(float32).data<float>().ToArray(), value.shape);
            }
            using var runOptions = new RunOptions();
            using var results = session.Run(runOptions, values, new[] { output });
            return tensor(results[0].GetTensorDataAsSpan<float>().ToArray(), results[0].GetTensorTypeAndShape().Shape);
        }
        finally
        {
            foreach (var v in values.Values) v.Dispose();
        }
    }

    /// <summary>max |a - b| after checking the shapes agree and that <paramref name="expected"/> is not near zero.</summary>
    public static float MaxDifference(Tensor expected, Tensor actual)
    {
        CollectionAssert.AreEqual(expected.shape, actual.shape, "output shape");
        Assert.IsTrue(expected.abs().max().item<float>() > 1e-2, "the reference output is near zero: weights were not randomised");
        using var diff = (expected - actual).abs().max();
        return diff.item<float>();
    }
}
