using System.CommandLine;
using Microsoft.ML.Data;
using Spectre.Console;
using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Commands;

// Microsoft.ML has a namespace named Command; name System.CommandLine's type explicitly.
using Command = System.CommandLine.Command;

/// <summary>
/// <c>export-onnx</c>: writes a trained network of a model zip as a standard ONNX model (<see cref="DiffusionModel.ExportOnnx(string)"/>,
/// <see cref="AutoencoderModel.ExportEncoderOnnx(string)"/> / <see cref="AutoencoderModel.ExportDecoderOnnx(string)"/>,
/// <see cref="NoisyClassifierModel.ExportOnnx(string)"/>), then opens each written file with ONNX Runtime to check it.
/// </summary>
public static class ExportOnnxCommand
{
    /// <summary>The names <c>--network</c> accepts.</summary>
    public static readonly string[] NetworkNames = { "auto", "unet", "encoder", "decoder", "classifier" };

    /// <summary>What <c>--model</c> expects.</summary>
    public const string ModelFile = "a model zip written by train, train-latent or train-noisy-classifier";

    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model zip: a diffusion model, an autoencoder or a noisy classifier", Required = true };
        var output = new Option<string>("--out") { Description = "The .onnx file to write", Required = true };
        var network = new Option<string>("--network")
        {
            Description = "Which network: auto (a diffusion model's U-Net, plus a latent model's decoder and encoder as OUT.decoder.onnx and " +
                          "OUT.encoder.onnx; an autoencoder's decoder, plus OUT.encoder.onnx; a noisy classifier), or one of unet, encoder, decoder, classifier",
            DefaultValueFactory = _ => "auto",
        };
        network.OneOf(NetworkNames);
        var command = new Command("export-onnx", "Export a trained network as an ONNX model (opset 17, dynamic batch, config in the metadata)") { model, output, network };
        command.SetAction(parse => Run(parse.GetValue(model)!, parse.GetValue(output)!, parse.GetValue(network)!));
        return command;
    }

    public static int Run(string modelPath, string outPath, string network)
    {
        InputFiles.RequireFile(modelPath, "--model", ModelFile);
        if (!outPath.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
            throw new CliException($"--out '{outPath}' does not end with .onnx; expected the path of the .onnx file to write.");
        var ml = new MLContext();
        var loaded = InputFiles.LoadModel<ITransformer>(ml, modelPath, "--model", ModelFile);
        var written = new List<(string Path, string Network)>();
        try
        {
            var model = (loaded as TransformerChain<ITransformer>)?.LastTransformer ?? loaded;
            string Sibling(string part) => Path.ChangeExtension(outPath, null) + "." + part + ".onnx";
            void Write(string path, string what, Action<string> export)
            {
                string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
                if (dir != null) Directory.CreateDirectory(dir);
                try
                {
                    export(path);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    throw new CliException($"Could not write '{path}' (expected a writable .onnx path): {CliErrors.OneLine(e.Message)}", e);
                }
                written.Add((path, what));
            }

            switch (model, network)
            {
                case (DiffusionModel d, "auto" or "unet"):
                    Write(outPath, "diffusion U-Net", d.ExportOnnx);
                    if (network == "auto" && d.Autoencoder is { } latent)
                    {
                        Write(Sibling("decoder"), "autoencoder decoder", latent.ExportDecoderOnnx);
                        Write(Sibling("encoder"), "autoencoder encoder", latent.ExportEncoderOnnx);
                    }
                    break;
                case (DiffusionModel { Autoencoder: { } a }, "encoder" or "decoder"):
                    ExportAutoencoderPart(a, network, outPath, Write);
                    break;
                case (AutoencoderModel a, "auto"):
                    Write(outPath, "autoencoder decoder", a.ExportDecoderOnnx);
                    Write(Sibling("encoder"), "autoencoder encoder", a.ExportEncoderOnnx);
                    break;
                case (AutoencoderModel a, "encoder" or "decoder"):
                    ExportAutoencoderPart(a, network, outPath, Write);
                    break;
                case (NoisyClassifierModel c, "auto" or "classifier"):
                    Write(outPath, "noisy classifier", c.ExportOnnx);
                    break;
                case (DiffusionModel or AutoencoderModel or NoisyClassifierModel, _):
                    throw new CliException($"--network {network}: --model '{modelPath}' holds a {Describe(model)}, which has no {network} network; " +
                                           $"expected {Networks(model)}.");
                default:
                    throw new CliException($"--model '{modelPath}' holds a {model.GetType().Name}; expected {ModelFile}.");
            }
        }
        finally
        {
            (loaded as IDisposable)?.Dispose();
        }

        foreach (var (path, what) in written)
        {
            // Read the written file back: it parses, carries the library's metadata and ONNX Runtime opens it.
            var file = Onnx.OnnxModelFile.Open(path);
            AnsiConsole.MarkupLine($"Wrote the {what} ({file.Kind}, opset {file.Model.OpsetImport[0].Version}) to [bold]{Markup.Escape(path)}[/] " +
                                   $"({file.Bytes.Length:N0} bytes).");
        }
        return 0;
    }

    private static void ExportAutoencoderPart(AutoencoderModel a, string part, string outPath, Action<string, string, Action<string>> write)
    {
        if (part == "encoder") write(outPath, "autoencoder encoder", a.ExportEncoderOnnx);
        else write(outPath, "autoencoder decoder", a.ExportDecoderOnnx);
    }

    private static string Describe(ITransformer model) => model switch
    {
        DiffusionModel { Autoencoder: not null } => "latent diffusion model",
        DiffusionModel => "pixel-space diffusion model",
        AutoencoderModel => "autoencoder",
        _ => "noisy classifier",
    };

    private static string Networks(ITransformer model) => model switch
    {
        DiffusionModel { Autoencoder: not null } => "auto, unet, encoder or decoder",
        DiffusionModel => "auto or unet",
        AutoencoderModel => "auto, encoder or decoder",
        _ => "auto or classifier",
    };
}
