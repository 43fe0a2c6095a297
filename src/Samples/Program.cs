using System.CommandLine;
using System.Runtime.CompilerServices;
using Microsoft.ML.Diffusion.Samples.Commands;

// bench --onednn-isa must set DNNL_MAX_CPU_ISA before the library's TorchRuntime initializer runs. That module initializer
// may run as soon as a method that calls into the library is compiled, so Main itself names no library type.
BenchCommand.ApplyOneDnnIsaOption(args);
return SamplesApp.Run(args);

internal static class SamplesApp
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Run(string[] args)
    {
        // Backend settings before the first tensor op (see TorchRuntime: oneDNN ISA on AMD AVX-512 CPUs).
        Microsoft.ML.Diffusion.TorchRuntime.EnsureInitialized();

        var root = new RootCommand("Microsoft.ML.Diffusion samples: train, generate, inpaint, upscale, bench, evaluate, train-classifier, evaluate-inpaint, evaluate-guidance, train-latent, train-noisy-classifier, soak (and the demo when run without a command).");
        root.Subcommands.Add(TrainCommand.Create());
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(EvaluateCommand.Create());
        root.Subcommands.Add(TrainClassifierCommand.Create());
        root.Subcommands.Add(InpaintCommand.Create());
        root.Subcommands.Add(UpscaleCommand.Create());
        root.Subcommands.Add(EvaluateInpaintCommand.Create());
        root.Subcommands.Add(SoakCommand.Create());
        root.Subcommands.Add(EvaluateGuidanceCommand.Create());
        root.Subcommands.Add(SyntheticTrainCommand.Create());
        root.Subcommands.Add(TrainLatentCommand.Create());
        root.Subcommands.Add(TrainNoisyClassifierCommand.Create());
        root.SetAction(parse => DemoCommand.Run(DemoCommand.DefaultModelPath, "out"));
        return root.Parse(args).Invoke();
    }
}
