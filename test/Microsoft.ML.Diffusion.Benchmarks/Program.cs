using BenchmarkDotNet.Running;

// Backend settings before the first tensor op (see TorchRuntime: oneDNN ISA on AMD AVX-512 CPUs). BenchmarkDotNet runs
// each benchmark in a child process started from this same entry point, so the child applies them too.
Microsoft.ML.Diffusion.TorchRuntime.EnsureInitialized();
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
