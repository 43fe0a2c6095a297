using BenchmarkDotNet.Attributes;
using Microsoft.ML.Diffusion.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Benchmarks;

/// <summary>
/// The U-Net's layers that compute a convolution another way, each beside the plain computation it replaces, at the
/// 28x28 U-Net's shapes (batch 64, fp32, no gradients): the 14 -> 28 upsampling (sub-pixel convolution against
/// nearest upsampling + 3x3 convolution) and the 1-channel input and output layers (matrix products against the
/// 32-channel padded convolution).
/// </summary>
[MemoryDiagnoser]
public class LayerBenchmarks
{
    private Upsample _upsample = null!;
    private Tensor _upWeight = null!, _upBias = null!, _low = null!, _temb = null!;
    private PaddedConv2d _input = null!, _output = null!;
    private Tensor _image = null!, _features = null!;

    [GlobalSetup]
    public void Setup()
    {
        torch.set_num_threads(2);
        manual_seed(0);
        _upsample = new Upsample(64, 14);
        _upWeight = _upsample.named_parameters().Single(p => p.name.EndsWith("weight")).parameter;
        _upBias = _upsample.named_parameters().Single(p => p.name.EndsWith("bias")).parameter;
        _low = randn(64, 64, 14, 14);
        _temb = randn(64, 128);
        _input = new PaddedConv2d(1, 32, 3);
        _output = new PaddedConv2d(32, 1, 3);
        _image = randn(64, 1, 28, 28);
        _features = randn(64, 32, 28, 28);
    }

    [Benchmark]
    public void UpsampleSubPixel()
    {
        using var noGrad = no_grad();
        using var y = _upsample.forward(_low, _temb);
    }

    [Benchmark]
    public void UpsampleNearestThenConv()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var up = nn.functional.interpolate(_low, scale_factor: new[] { 2.0, 2.0 }, mode: InterpolationMode.Nearest);
        nn.functional.conv2d(up, _upWeight, _upBias, padding: new long[] { 1, 1 });
    }

    [Benchmark]
    public void InputLayerMatrixProduct()
    {
        using var noGrad = no_grad();
        using var y = _input.forward(_image);
    }

    [Benchmark]
    public void InputLayerPaddedConv()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var x = nn.functional.pad(_image, new long[] { 0, 0, 0, 0, 0, 31 });
        var w = nn.functional.pad(_input.Weight, new long[] { 0, 0, 0, 0, 0, 31 });
        nn.functional.conv2d(x, w, _input.Bias, padding: new long[] { 1, 1 });
    }

    [Benchmark]
    public void OutputLayerMatrixProducts()
    {
        using var noGrad = no_grad();
        using var y = _output.forward(_features);
    }

    [Benchmark]
    public void OutputLayerPaddedConv()
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var w = nn.functional.pad(_output.Weight, new long[] { 0, 0, 0, 0, 0, 0, 0, 31 });
        var b = nn.functional.pad(_output.Bias, new long[] { 0, 31 });
        nn.functional.conv2d(_features, w, b, padding: new long[] { 1, 1 })[.., ..1].contiguous();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { _low, _temb, _image, _features }) t.Dispose();
        _upsample.Dispose();
        _input.Dispose();
        _output.Dispose();
    }
}
