using System.CommandLine;
using System.Runtime.CompilerServices;
using System.CommandLine.Invocation;
using Microsoft.ML.Diffusion.Samples.Cli;
using Microsoft.ML.Diffusion.Samples.Commands;

// bench --onednn-isa must set DNNL_MAX_CPU_ISA before the library's TorchRuntime initializer runs. That module initializer
// may run as soon as a method that calls into the library is compiled, so Main itself names no library type.
BenchCommand.ApplyOneDnnIsaOption(args);
return SamplesApp.Run(args);

/// <summary>The samples' command line: parses, runs the command, and reports any failure as one line with exit code 1.</summary>
internal static class SamplesApp
{
    /// <summary>Runs the command <paramref name="args"/> name; returns the exit code (0 done, 1 bad input or failure, 130 cancelled).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int Run(string[] args)
    {
        var root = CreateRoot();
        var parse = root.Parse(args);
        // Bad options fail here, before any model is loaded: one line, exit code 1.
        if (parse.Errors.Count > 0 && parse.Action is ParseErrorAction) return CliErrors.ReportParseErrors(parse, Console.Error);
        bool verbose = parse.GetValue(CliErrors.Verbose);
        try
        {
            // Backend settings before the first tensor op (see TorchRuntime: malloc thresholds, the opt-in AVX2 limit).
            Microsoft.ML.Diffusion.TorchRuntime.EnsureInitialized();
            return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (Exception e)
        {
            return CliErrors.Report(e, verbose, Console.Error);
        }
    }

    /// <summary>The root command with every subcommand and the global <c>--verbose</c> option.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static RootCommand CreateRoot()
    {
        var root = new RootCommand("Microsoft.ML.Diffusion samples: train, generate, inpaint, upscale, img2img, bench, evaluate, train-classifier, evaluate-inpaint, evaluate-guidance, train-latent, train-noisy-classifier, soak, plot, export-onnx (and the demo when run without a command).");
        root.Subcommands.Add(TrainCommand.Create());
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(EvaluateCommand.Create());
        root.Subcommands.Add(TrainClassifierCommand.Create());
        root.Subcommands.Add(InpaintCommand.Create());
        root.Subcommands.Add(UpscaleCommand.Create());
        root.Subcommands.Add(Img2ImgCommand.Create());
        root.Subcommands.Add(EvaluateInpaintCommand.Create());
        root.Subcommands.Add(SoakCommand.Create());
        root.Subcommands.Add(EvaluateGuidanceCommand.Create());
        root.Subcommands.Add(SyntheticTrainCommand.Create());
        root.Subcommands.Add(TrainLatentCommand.Create());
        root.Subcommands.Add(TrainNoisyClassifierCommand.Create());
        root.Subcommands.Add(PlotCommand.Create());
        root.Subcommands.Add(ExportOnnxCommand.Create());
        root.Options.Add(CliErrors.Verbose);
        root.SetAction(parse => DemoCommand.Run(DemoCommand.DefaultModelPath, "out", EngineOption.Default));
        return root;
    }
}
