using System.Diagnostics;
using Microsoft.ML.Diffusion.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Benchmarks.Census;

/// <summary>How one layer shape was computed: by the plain libtorch op, or by the library's layer as built.</summary>
public enum CensusRoute
{
    /// <summary>The plain op at the layer's natural shape (nn.functional.conv2d, linear, group_norm).</summary>
    Plain,
    /// <summary>The library's layer (PaddedConv2d's padded or matrix-product paths, the upsampling phase convolution).</summary>
    Library,
}

/// <summary>The fault counts of one layer shape, one route, in one process.</summary>
/// <param name="FirstHash">A hash of the first call's bits (output and gradients): processes that probe the same inputs at
/// the same level should agree, or a model would give other images in another process.</param>
public sealed record ProbeResult(string Key, CensusRoute Route, int Calls, int NonFinite, int Wrong, int Nondeterministic, double MaxError, double Seconds,
    string FirstHash = "");

/// <summary>
/// Runs layers forward and backward many times in this process and compares every result (output, input gradient and
/// parameter gradients) with the same layer computed once in float64 from the same values.
/// </summary>
/// <remarks>
/// A call is <em>non-finite</em> if any value is NaN or infinite, <em>wrong</em> if finite but
/// max |result - reference| / max |reference| exceeds the tolerance (1e-3 in float32, 5e-2 in bfloat16, against typical
/// rounding errors of 1e-6 and 1e-2), and <em>nondeterministic</em> if its bits differ from the first call's in this process.
/// float64 runs on libtorch's reference kernels: oneDNN does not take float64.
/// </remarks>
internal static class CensusProbe
{
    /// <summary>The largest relative error a correct result has, per dtype.</summary>
    public static double Tolerance(ScalarType dtype) => dtype == ScalarType.BFloat16 ? 5e-2 : 1e-3;

    /// <summary>The routes a shape has: the library's layer differs from the plain op only for padded and upsampling convolutions.</summary>
    public static IEnumerable<CensusRoute> Routes(LayerShape shape) =>
        shape.Kind is LayerKind.PaddedConv or LayerKind.UpsampleConv ? new[] { CensusRoute.Plain, CensusRoute.Library } : new[] { CensusRoute.Plain };

    /// <summary>Runs <paramref name="calls"/> forward+backward calls of one shape and route (or fewer, at most <paramref name="maxSeconds"/>).</summary>
    public static ProbeResult Run(LayerShape shape, CensusRoute route, ScalarType dtype, int calls, double maxSeconds, int seed)
    {
        manual_seed(seed);
        using var scope = NewDisposeScope();
        var (x, parameters) = Inputs(shape);
        // Values are rounded to the probed dtype first, so that the reference sees exactly the probed inputs.
        x = x.to(dtype); parameters = parameters.Select(p => p.to(dtype)).ToArray();
        var layer = Layer(shape, route);
        var g = GradientSeed(OutputShape(shape), seed).to(dtype);
        var reference = layer.For(ScalarType.Float64)(x.to(float64), parameters.Select(p => p.to(float64)).ToArray(), g.to(float64));
        var step = layer.For(dtype);    // built outside the per-call scopes: the library's modules live as long as the probe
        double tolerance = Tolerance(dtype);
        int nonFinite = 0, wrong = 0, nondeterministic = 0, done = 0;
        double maxError = 0;
        Tensor[]? first = null;
        var watch = Stopwatch.StartNew();
        for (; done < calls && (done == 0 || watch.Elapsed.TotalSeconds < maxSeconds); done++)
        {
            using var callScope = NewDisposeScope();
            var result = step(x, parameters, g).Select(r => r.to(float64)).ToArray();
            bool finite = result.All(r => r.isfinite().all().item<bool>());
            if (!finite) nonFinite++;
            else
            {
                double error = result.Zip(reference).Max(p => (p.First - p.Second).abs().max().item<double>() / Math.Max(p.Second.abs().max().item<double>(), 1e-12));
                maxError = Math.Max(maxError, error);
                if (error > tolerance) wrong++;
            }
            if (first is null) first = result.Select(r => r.detach().clone().MoveToOuterDisposeScope()).ToArray();
            else if (!result.Zip(first).All(p => p.First.eq(p.Second).all().item<bool>())) nondeterministic++;
        }
        return new ProbeResult(shape.Key, route, done, nonFinite, wrong, nondeterministic, maxError, watch.Elapsed.TotalSeconds, Hash(first!));
    }

    /// <summary>SHA-256 (first 16 hex digits) of the tensors' values.</summary>
    private static string Hash(Tensor[] tensors)
    {
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        foreach (var t in tensors)
            sha.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(t.contiguous().data<double>().ToArray().AsSpan()));
        return Convert.ToHexString(sha.GetHashAndReset())[..16];
    }

    /// <summary>The layer's output shape.</summary>
    private static long[] OutputShape(LayerShape s)
    {
        var shape = (long[])s.Input.Clone();
        switch (s.Kind)
        {
            case LayerKind.Linear: shape[^1] = s.Out; break;
            case LayerKind.GroupNorm: break;
            case LayerKind.UpsampleConv: shape[1] = s.Out; shape[2] *= 2; shape[3] *= 2; break;
            default:   // (H + 2 padding - kernel) / stride + 1, padding kernel / 2
                shape[1] = s.Out;
                shape[2] = (shape[2] + 2 * (s.Kernel / 2) - s.Kernel) / s.Stride + 1;
                shape[3] = (shape[3] + 2 * (s.Kernel / 2) - s.Kernel) / s.Stride + 1;
                break;
        }
        return shape;
    }

    /// <summary>Random input and parameters at the layer's natural shapes (weights scaled as nn.Conv2d initialises them).</summary>
    private static (Tensor X, Tensor[] Parameters) Inputs(LayerShape s)
    {
        var x = randn(s.Input);
        switch (s.Kind)
        {
            case LayerKind.Linear:
                return (x, new[] { randn(s.Out, s.In) / Math.Sqrt(s.In), randn(s.Out) * 0.1 });
            case LayerKind.GroupNorm:
                return (x, new[] { 1 + 0.1 * randn(s.Out), 0.1 * randn(s.Out) });
            default:
                return (x, new[] { randn(s.Out, s.In, s.Kernel, s.Kernel) / Math.Sqrt(s.In * s.Kernel * s.Kernel), randn(s.Out) * 0.1 });
        }
    }

    /// <summary>One training step of a layer for a dtype: (x, parameters, g) -> y = f(x), then the gradients of sum(y * g):
    /// [y, dx, dparameters...]. The library's modules are built once per dtype.</summary>
    private sealed class ProbeLayer(Func<ScalarType, Func<Tensor, Tensor[], Tensor, Tensor[]>> build)
    {
        private readonly Dictionary<ScalarType, Func<Tensor, Tensor[], Tensor, Tensor[]>> _byType = new();
        public Func<Tensor, Tensor[], Tensor, Tensor[]> For(ScalarType dtype) => _byType.TryGetValue(dtype, out var f) ? f : _byType[dtype] = build(dtype);

        /// <summary>A layer that is a function of its input and parameters.</summary>
        public static ProbeLayer Functional(Func<Tensor, Tensor[], Tensor> f) => new(_ => (x, parameters, g) =>
        {
            var xs = x.detach().clone().requires_grad_(true);
            var ps = parameters.Select(p => p.detach().clone().requires_grad_(true)).ToArray();
            var y = f(xs, ps);
            (y * g).sum().backward();
            return new[] { y.detach(), xs.grad! }.Concat(ps.Select(p => p.grad!)).ToArray();
        });
    }

    private static ProbeLayer Layer(LayerShape s, CensusRoute route)
    {
        long[] stride = { s.Stride, s.Stride }, padding = { s.Kernel / 2, s.Kernel / 2 };
        return (s.Kind, route) switch
        {
            (LayerKind.Linear, _) => ProbeLayer.Functional((x, p) => nn.functional.linear(x, p[0], p[1])),
            (LayerKind.GroupNorm, _) => ProbeLayer.Functional((x, p) => nn.functional.group_norm(x, s.Groups, p[0], p[1], 1e-5)),
            (LayerKind.UpsampleConv, CensusRoute.Plain) => ProbeLayer.Functional((x, p) =>
                nn.functional.conv2d(nn.functional.interpolate(x, scale_factor: new[] { 2.0, 2.0 }, mode: InterpolationMode.Nearest), p[0], p[1], padding: new long[] { 1, 1 })),
            (LayerKind.UpsampleConv, CensusRoute.Library) => ProbeLayer.Functional((x, p) => NearestUpsampleConv.Forward(x, p[0], p[1])),
            (LayerKind.PaddedConv, CensusRoute.Library) => new(dtype =>
            {
                var module = new PaddedConv2d(s.In, s.Out, s.Kernel, s.Stride).to(dtype);
                return (x, p, g) =>
                {
                    using (no_grad()) { module.Weight.copy_(p[0]); module.Bias.copy_(p[1]); }
                    module.zero_grad();
                    var xs = x.detach().clone().requires_grad_(true);
                    var y = module.call(xs);
                    (y * g).sum().backward();
                    return new[] { y.detach(), xs.grad!, module.Weight.grad!.clone(), module.Bias.grad!.clone() };
                };
            }),
            _ => ProbeLayer.Functional((x, p) => nn.functional.conv2d(x, p[0], p[1], strides: stride, padding: padding)),
        };
    }

    /// <summary>A fixed random output gradient g, the same in every process for a seed.</summary>
    private static Tensor GradientSeed(long[] shape, int seed)
    {
        using var generator = new Generator((ulong)seed + 7);
        return randn(shape, generator: generator);
    }
}
