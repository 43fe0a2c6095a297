using Microsoft.ML.Diffusion.Onnx;
using Microsoft.ML.OnnxRuntime;
using static Microsoft.ML.Diffusion.Tests.Onnx.UNetOnnxExportTests;

namespace Microsoft.ML.Diffusion.Tests.Onnx;

/// <summary>
/// The ONNX Runtime session settings (<see cref="OnnxExecution"/>): full graph optimisation, TorchSharp's thread count, one inter-op
/// thread; and the plumbing of MLContext.GpuDeviceId to the CUDA execution provider. This test process references the CPU package
/// (no CUDA provider, no GPU), so a CUDA request without FallbackToCpu gets the error naming the package to reference, and with it
/// runs on the CPU (same images) and logs why. A GPU build cannot be exercised here.
/// </summary>
[TestClass]
public class OnnxExecutionTests
{
    [TestMethod]
    public void CpuSessionsUseTheLibrarySettings()
    {
        using var options = OnnxExecution.CreateOptions(gpuDeviceId: null, fallbackToCpu: false, out var placement);
        Assert.AreEqual(GraphOptimizationLevel.ORT_ENABLE_ALL, options.GraphOptimizationLevel);
        Assert.AreEqual(TorchSharp.torch.get_num_threads(), options.IntraOpNumThreads);
        Assert.AreEqual(1, options.InterOpNumThreads);
        Assert.AreEqual(ExecutionMode.ORT_SEQUENTIAL, options.ExecutionMode);
        Assert.IsNull(placement.CudaDevice);
        Assert.IsNull(placement.Warning);
    }

    [TestMethod]
    public void CudaWithoutTheGpuPackageNamesThePackage()
    {
        CollectionAssert.DoesNotContain(OrtEnv.Instance().GetAvailableProviders(), OnnxExecution.CudaProvider, "this test process references the CPU package");
        var error = Assert.ThrowsExactly<InvalidOperationException>(() => OnnxExecution.CreateOptions(gpuDeviceId: 0, fallbackToCpu: false, out _));
        StringAssert.Contains(error.Message, "GpuDeviceId is 0");
        StringAssert.Contains(error.Message, "FallbackToCpu is false");
        StringAssert.Contains(error.Message, "Microsoft.ML.OnnxRuntime.Gpu.Linux");
        StringAssert.Contains(error.Message, "CPUExecutionProvider");

        using var options = OnnxExecution.CreateOptions(gpuDeviceId: 0, fallbackToCpu: true, out var placement);
        Assert.IsNull(placement.CudaDevice);
        StringAssert.Contains(placement.Warning, "runs on the CPU");
        StringAssert.Contains(placement.Warning, "Microsoft.ML.OnnxRuntime.Gpu.Linux");

        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => OnnxExecution.CreateOptions(gpuDeviceId: -1, fallbackToCpu: true, out _));
    }

    /// <summary>A build that lists the CUDA provider but cannot append it (here: the CPU library pretending) is refused by name, or falls back.</summary>
    [TestMethod]
    public void CudaProviderThatFailsIsReported()
    {
        var pretended = new[] { OnnxExecution.CudaProvider, "CPUExecutionProvider" };
        var error = Assert.ThrowsExactly<InvalidOperationException>(() => OnnxExecution.CreateOptions(1, fallbackToCpu: false, pretended, out _));
        StringAssert.Contains(error.Message, "GpuDeviceId is 1");
        StringAssert.Contains(error.Message, "refused device 1");
        using var options = OnnxExecution.CreateOptions(1, fallbackToCpu: true, pretended, out var placement);
        Assert.IsNull(placement.CudaDevice);
        StringAssert.Contains(placement.Warning, "refused device 1");
    }

    /// <summary>End to end: a model whose MLContext asks for GPU 0 generates on ONNX Runtime's CPU with FallbackToCpu (the same
    /// images as a model without the request, and a warning on the MLContext log), and fails clearly without it.</summary>
    [TestMethod]
    public void MlContextGpuRequestReachesTheSession()
    {
        var options = new SamplerOptions { Sampler = SamplerKind.Ddim, Steps = 3, Seed = 4, Engine = InferenceEngine.OnnxRuntime };
        using var plain = RandomModel(Tiny());
        using var expected = plain.GenerateTensor(new uint[] { 1, 2 }, options);

        var fallback = new MLContext(seed: 1) { GpuDeviceId = 0, FallbackToCpu = true };
        var warnings = new List<string>();
        fallback.Log += (_, e) =>
        {
            if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Warning)
                lock (warnings) warnings.Add(e.Message);
        };
        using var model = RandomModel(Tiny(), ml: fallback);
        using var images = model.GenerateTensor(new uint[] { 1, 2 }, options);
        Assert.AreEqual(0f, (images - expected).abs().max().item<float>());
        Assert.IsTrue(warnings.Any(w => w.Contains("GpuDeviceId is 0") && w.Contains("runs on the CPU")), string.Join(" | ", warnings));

        using var strict = RandomModel(Tiny(), ml: new MLContext(seed: 1) { GpuDeviceId = 0, FallbackToCpu = false });
        var error = Assert.ThrowsExactly<InvalidOperationException>(() => strict.GenerateTensor(new uint[] { 1 }, options));
        StringAssert.Contains(error.Message, "Microsoft.ML.OnnxRuntime.Gpu.Linux");
    }
}
