using System.Diagnostics;
using Microsoft.ML.Diffusion.Models;
using Microsoft.ML.Diffusion.Schedulers;
using Microsoft.ML.Diffusion.Schedules;
using Microsoft.ML.Diffusion.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Samples.Bench;

/// <summary>
/// The TorchSharp side of <c>bench</c>: the 28x28 U-Net of the Core configuration at a given batch, timed for a training
/// step (fp32 and bf16 mixed precision), one denoising step (fp32 and bf16), and the dense limits of libtorch in this
/// process (large fp32 matmul, fp32 3x3 convolution, bf16 matmul). The PyTorch script (pytorch_unet_bench.py) measures
/// the same figures with the same shapes. The ONNX Runtime engine (<see cref="InferenceEngine.OnnxRuntime"/>) runs the same EMA
/// network, exported to ONNX in memory, for the denoising step at batch 64 and batch 1 (the session settings of the library,
/// <c>Onnx/OnnxExecution</c>).
/// </summary>
public sealed class TorchSharpBench : IDisposable
{
    /// <summary>Matrix side of the matmul limits (2 n^3 FLOP).</summary>
    public const int MatmulSide = 2048;

    private readonly int _batch;
    private readonly int _iterations;
    private readonly UNet _model, _ema, _model16, _ema16;
    private readonly DiffusionTrainingLoop _loop, _loop16;
    private readonly LowPrecisionCopy _emaBf16;
    private readonly DdimScheduler _scheduler;
    private readonly Tensor _x0, _t, _x0b1, _tb1, _a32, _b32, _a16, _b16, _convX, _convW;
    private readonly Onnx.OnnxRuntimeNetwork _onnx;

    /// <summary>Builds the networks (seed 1) and the inputs.</summary>
    public TorchSharpBench(int batchSize, int iterations, bool includeBf16)
    {
        IncludeBf16 = includeBf16;
        _batch = batchSize;
        _iterations = iterations;
        var config = new UNetConfig(); // 1x28x28, base 32, mults 1,2,2, attention at 7
        manual_seed(1);
        _model = new UNet(config);
        _ema = new UNet(config);
        _model16 = new UNet(config);
        _ema16 = new UNet(config);
        var schedule = new DiffusionSchedule(NoiseSchedule.Linear, 1000);
        _loop = new DiffusionTrainingLoop(_model, _ema, schedule, new TrainingSettings { Seed = 1 }, CPU);
        _loop16 = new DiffusionTrainingLoop(_model16, _ema16, schedule, new TrainingSettings { Seed = 1, Precision = Precision.Bf16Mixed }, CPU);
        _ema.eval();
        _emaBf16 = new LowPrecisionCopy(_ema, bfloat16);
        _scheduler = new DdimScheduler(schedule);
        _scheduler.SetTimesteps(50);
        _x0 = rand(batchSize, 1, 28, 28) * 2 - 1;
        _t = full(new long[] { batchSize }, _scheduler.Timesteps[25], dtype: int64);
        _x0b1 = _x0.narrow(0, 0, 1).contiguous();
        _tb1 = _t.narrow(0, 0, 1).contiguous();
        // The same EMA network on ONNX Runtime: exported in memory, one session (the library's settings, MLContext without a GPU).
        using (var stream = new MemoryStream())
        {
            Onnx.UNetOnnxExporter.Export(_ema, new DiffusionModelConfig { Network = config }, stream);
            _onnx = new Onnx.OnnxRuntimeNetwork(stream.ToArray(), config, new MLContext(seed: 1));
        }
        _a32 = randn(MatmulSide, MatmulSide);
        _b32 = randn(MatmulSide, MatmulSide);
        _a16 = _a32.to(bfloat16);
        _b16 = _b32.to(bfloat16);
        _convX = randn(ConvBatch, 128, 56, 56);
        _convW = randn(128, 128, 3, 3);
    }

    /// <summary>Whether the bfloat16 figures are measured.</summary>
    public bool IncludeBf16 { get; }

    /// <summary>Parameters of the U-Net.</summary>
    public long ParameterCount => _model.ParameterCount;

    /// <summary>Forward FLOPs per image of the U-Net.</summary>
    public double ForwardFlopsPerImage => _model.ForwardFlopsPerImage();

    /// <summary>
    /// Batch of the convolution limit: 16 keeps its input and output (25.7 MB each) below glibc's largest mmap threshold
    /// (32 MiB), so that the figure measures the kernel; at 32 every output was a fresh mmap and the figure swung from 90 to
    /// 370 GFLOP/s with the machine's page-fault cost.
    /// </summary>
    public const int ConvBatch = 16;

    /// <summary>FLOPs of one call of the convolution limit: [16, 128, 56, 56] * [128, 128, 3, 3], padding 1.</summary>
    public static double ConvFlops => 2.0 * ConvBatch * 56 * 56 * 128 * 128 * 9;

    /// <summary>Measures every figure once (after one warm-up call each); images/s or GFLOP/s. <paramref name="log"/> gets each figure.</summary>
    public Dictionary<string, double> Measure(Action<string, double>? log = null)
    {
        var figures = new (string Key, Action Call, double Work, int Iterations)[]
        {
            ("train_img_per_s", () => _loop.TrainStep(_x0), _batch, _iterations),
            ("train_bf16_img_per_s", () => _loop16.TrainStep(_x0), _batch, _iterations),
            ("step_img_per_s", () => DenoisingStep(_ema.forward), _batch, _iterations),
            ("step_bf16_img_per_s", () => DenoisingStep(_emaBf16.Forward), _batch, _iterations),
            ("step_img_per_s.onnxruntime", () => DenoisingStep((x, t) => _onnx.Forward(x, t, null)), _batch, _iterations),
            ("step_b1_img_per_s", () => DenoisingStep(_ema.forward, _x0b1, _tb1), 1, B1Iterations),
            ("step_b1_img_per_s.onnxruntime", () => DenoisingStep((x, t) => _onnx.Forward(x, t, null), _x0b1, _tb1), 1, B1Iterations),
            ("matmul_gflops_per_s", () => Dense(() => mm(_a32, _b32)), 2.0 * Math.Pow(MatmulSide, 3) / 1e9, 3 * _iterations),
            ("conv_gflops_per_s", () => Dense(() => nn.functional.conv2d(_convX, _convW, padding: new long[] { 1, 1 })), ConvFlops / 1e9, _iterations),
            ("matmul_bf16_gflops_per_s", () => Dense(() => mm(_a16, _b16)), 2.0 * Math.Pow(MatmulSide, 3) / 1e9, 3 * _iterations),
        };
        var result = new Dictionary<string, double>();
        foreach (var (key, call, work, iterations) in figures)
        {
            if (!IncludeBf16 && key.Contains("bf16")) continue;
            result[key] = Rate(call, work, iterations);
            log?.Invoke(key, result[key]);
        }
        return result;
    }

    /// <summary>Timed calls per round of the batch-1 figures (a call takes milliseconds): 8 times the batch figures' iterations.</summary>
    private int B1Iterations => 8 * _iterations;

    /// <summary>One sampling step as DiffusionSampler takes it: the network's forward and a DDIM update (eq. 12), on the batch
    /// (<paramref name="x0"/>, <paramref name="t"/>; default the batch of <c>--batch-size</c>).</summary>
    private void DenoisingStep(Func<Tensor, Tensor, Tensor> network, Tensor? x0 = null, Tensor? t = null)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var eps = network(x0 ?? _x0, t ?? _t);
        _scheduler.Step(eps, _scheduler.Timesteps[25], x0 ?? _x0);
    }

    private static void Dense(Func<Tensor> op)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        op();
    }

    private static double Rate(Action call, double workPerCall, int iterations)
    {
        call(); // warm-up: oneDNN primitive creation, allocator caches
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < iterations; i++) call();
        return workPerCall * iterations / watch.Elapsed.TotalSeconds;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in new[] { _x0, _t, _x0b1, _tb1, _a32, _b32, _a16, _b16, _convX, _convW }) t.Dispose();
        _onnx.Dispose();
        _emaBf16.Dispose();
        _loop.Dispose();
        _loop16.Dispose();
        foreach (var m in new[] { _model, _ema, _model16, _ema16 }) m.Dispose();
    }
}
