using BenchmarkDotNet.Attributes;
using Microsoft.ML.Diffusion.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Benchmarks;

/// <summary>Forward passes of the 28x28 U-Net (1.62 M parameters) without gradients: fp32 and its bfloat16 copy.</summary>
[MemoryDiagnoser]
public class UNetBenchmarks
{
    private UNet _net = null!;
    private LowPrecisionCopy _bf16 = null!;
    private Tensor _x = null!, _t = null!;

    /// <summary>Images per forward.</summary>
    [Params(1, 64)]
    public int Batch { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        torch.set_num_threads(2);
        manual_seed(0);
        _net = new UNet(new UNetConfig());
        _net.eval();
        _bf16 = new LowPrecisionCopy(_net, bfloat16);
        _x = randn(Batch, 1, 28, 28);
        _t = full(new long[] { Batch }, 500L, dtype: int64);
    }

    [Benchmark(Baseline = true)]
    public void ForwardFp32()
    {
        using var noGrad = no_grad();
        using var y = _net.forward(_x, _t);
    }

    [Benchmark]
    public void ForwardBf16()
    {
        using var noGrad = no_grad();
        using var y = _bf16.Forward(_x, _t);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _x.Dispose();
        _t.Dispose();
        _bf16.Dispose();
        _net.Dispose();
    }
}
