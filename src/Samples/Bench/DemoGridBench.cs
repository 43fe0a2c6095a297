using System.Diagnostics;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Diffusion.Samples.Commands;

namespace Microsoft.ML.Diffusion.Samples.Bench;

/// <summary>
/// The demo's 64-image grid (the bundled model, DPM-Solver++ with 20 steps, seed 0, one batch of 64: <see cref="DemoCommand"/>)
/// timed on each inference engine, wall clock from the first step to the grid image, after a one-image warm-up that opens the
/// engine (the ONNX Runtime session is exported and made once per model, as in the demo's process).
/// </summary>
public sealed class DemoGridBench : IDisposable
{
    private readonly DiffusionModel _model;

    private DemoGridBench(DiffusionModel model) => _model = model;

    /// <summary>The bench on the bundled model, or null (with <paramref name="why"/>) when it is not next to the executable.</summary>
    public static DemoGridBench? TryCreate(out string why)
    {
        why = "";
        string path = DemoCommand.DefaultModelPath;
        if (!File.Exists(path))
        {
            why = $"the bundled model {path} was not found";
            return null;
        }
        var model = new MLContext(seed: 1).Generative.LoadDiffusionModel(path);
        foreach (var engine in Enum.GetValues<InferenceEngine>())
            model.Generate(1, new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlus, Steps = 1, Engine = engine })[0].Dispose();
        return new DemoGridBench(model);
    }

    /// <summary>Seconds for the demo's grid with <paramref name="engine"/>.</summary>
    public double Seconds(InferenceEngine engine)
    {
        var options = new SamplerOptions { Sampler = SamplerKind.DpmSolverPlusPlus, Steps = 20, Seed = 0, Engine = engine };
        var watch = Stopwatch.StartNew();
        var images = _model.Generate(64, options);
        using (ImageGrid.Create(images)) { }
        double seconds = watch.Elapsed.TotalSeconds;
        foreach (var image in images) image.Dispose();
        return seconds;
    }

    /// <inheritdoc/>
    public void Dispose() => _model.Dispose();
}
