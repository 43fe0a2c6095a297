using BenchmarkDotNet.Running;

// Backend settings before the first tensor op (see TorchRuntime: malloc thresholds, the opt-in AVX2 limit).
Microsoft.ML.Diffusion.TorchRuntime.EnsureInitialized();
// census: the fault census of libtorch's kernels (see Census/CensusCommand.cs), not a BenchmarkDotNet run.
if (args.Length > 1 && args[0] == "census" && args[1] == "scalar-race") return Microsoft.ML.Diffusion.Benchmarks.Census.ScalarRace.Run(args.Skip(2).ToArray());
if (args.Length > 0 && args[0] == "census") return Microsoft.ML.Diffusion.Benchmarks.Census.CensusCommand.Run(args.Skip(1).ToArray());
// In-process: the benchmarks then run with these settings and with this build's patched libLibTorchSharp.so (see build/),
// and BenchmarkDotNet does not rebuild the project for a child process (minutes on a 2-core machine).
if (!args.Contains("--inProcess", StringComparer.OrdinalIgnoreCase)) args = args.Append("--inProcess").ToArray();
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;
