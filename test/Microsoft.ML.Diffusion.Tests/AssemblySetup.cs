// Tests share one process and libtorch's thread pool; run classes in sequence so timings and memory stay bounded.
[assembly: DoNotParallelize]

namespace Microsoft.ML.Diffusion.Tests;

[TestClass]
public static class AssemblySetup
{
    /// <summary>Backend settings must be in place before the first tensor op of the process (see TorchRuntime).</summary>
    [AssemblyInitialize]
    public static void Initialize(TestContext _) => TorchRuntime.EnsureInitialized();

    /// <summary>Frees the model that several test classes share (<see cref="TestModel.Shared"/>).</summary>
    [AssemblyCleanup]
    public static void Cleanup() => TestModel.DisposeShared();
}
