using BenchmarkDotNet.Attributes;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Imaging;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Benchmarks;

/// <summary>MLImage to tensor and back for a batch of 64 28x28 images, grayscale and RGB.</summary>
[MemoryDiagnoser]
public class ImageConversionBenchmarks
{
    private MLImage[] _images = null!;
    private Tensor _gray = null!, _rgb = null!;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(0);
        _images = Enumerable.Range(0, 64).Select(_ =>
        {
            var px = new byte[4 * 28 * 28];
            rng.NextBytes(px);
            return MLImage.CreateFromPixels(28, 28, MLPixelFormat.Bgra32, px);
        }).ToArray();
        _gray = rand(64, 1, 28, 28) * 2 - 1;
        _rgb = rand(64, 3, 28, 28) * 2 - 1;
    }

    [Benchmark]
    public void ImagesToGrayTensor()
    {
        using var t = ImageTensorConverter.ToTensor(_images, 1);
    }

    [Benchmark]
    public void ImagesToRgbTensor()
    {
        using var t = ImageTensorConverter.ToTensor(_images, 3);
    }

    [Benchmark]
    public byte[][] GrayTensorToPixels() => ImageTensorConverter.ToBgraPixels(_gray);

    [Benchmark]
    public byte[][] RgbTensorToPixels() => ImageTensorConverter.ToBgraPixels(_rgb);

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var i in _images) i.Dispose();
        _gray.Dispose();
        _rgb.Dispose();
    }
}
