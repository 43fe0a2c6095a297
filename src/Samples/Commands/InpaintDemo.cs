using MLImage = Microsoft.ML.Data.MLImage;
using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Imaging;

namespace Microsoft.ML.Diffusion.Samples.Commands;

/// <summary>The demo's inpainting and upscaling part: five of the bundled test images, each filled with another of RePaint's
/// masks (thin, wide, half, outer, alternating lines), and upscaled x2.</summary>
public static class InpaintDemo
{
    private static readonly string[] Names = { "coat", "sneaker", "bag", "dress", "trouser" };

    /// <summary>The mask of each image in <see cref="Names"/>.</summary>
    private static readonly InpaintMaskKind[] Masks =
        { InpaintMaskKind.Thin, InpaintMaskKind.Wide, InpaintMaskKind.Half, InpaintMaskKind.Outer, InpaintMaskKind.AlternatingLines };

    /// <summary>RePaint settings small enough for the demo: 50 steps, jump 5, 2 resamplings (95 network calls).</summary>
    private static T Settings<T>(DiffusionModel model, InferenceEngine engine) where T : RePaintOptions, new() =>
        new() { Steps = Math.Min(50, model.Timesteps), JumpLength = 5, Resamplings = 2, Seed = 0, BatchSize = Names.Length, Engine = engine };

    /// <summary>Fills one mask of <see cref="Masks"/> in each image; writes rows of input | masked | result to <paramref name="path"/>.</summary>
    public static void Inpaint(MLContext ml, DiffusionModel model, string path, InferenceEngine engine = Cli.EngineOption.Default)
    {
        int size = model.ImageSize;
        var masks = Names.Select((_, i) => InpaintMasks.Create(Masks[i], size, i)).ToArray();
        var definition = SchemaDefinition.Create(typeof(Row));
        definition[nameof(Row.Mask)].ColumnType = new VectorDataViewType(BooleanDataViewType.Instance, size * size);
        var data = ml.Data.LoadFromEnumerable(Names.Select((n, i) => new Row { Path = n + ".png", Mask = masks[i] }).ToList(), definition);
        var options = Settings<InpaintOptions>(model, engine);
        var pairs = RePaintCliOptions.WithProgress(model, options, Names.Length, "Inpainting (thin, wide, half, outer, lines)",
            () => InpaintCommand.ReadPairs(InpaintCommand.ImagePipeline(ml, InpaintCommand.ImagesDirectory, size, model.Channels)
                .Append(ml.Generative.Inpaint(model, "Inpainted", "Image", "Mask", options)).Fit(data).Transform(data), "Image", "Inpainted"));
        var tiles = new List<MLImage>();
        for (int i = 0; i < pairs.Count; i++)
        {
            using var mask = InpaintMasks.ToImage(masks[i], size);
            tiles.AddRange(new[] { pairs[i].First, InpaintCommand.MaskedView(pairs[i].First, mask), pairs[i].Second });
        }
        Save(tiles, 3, path);
    }

    /// <summary>Upscales each image from half the model's size; writes rows of input (pixels repeated) | result to <paramref name="path"/>.</summary>
    public static void Upscale(MLContext ml, DiffusionModel model, string path, InferenceEngine engine = Cli.EngineOption.Default)
    {
        var data = ml.Data.LoadFromEnumerable(Names.Select(n => new Row { Path = n + ".png" }).ToList());
        var options = Settings<UpscaleOptions>(model, engine);
        options.Factor = 2;
        var pairs = RePaintCliOptions.WithProgress(model, options, Names.Length, "Upscaling x2",
            () => InpaintCommand.ReadPairs(InpaintCommand.ImagePipeline(ml, InpaintCommand.ImagesDirectory, model.ImageSize / 2, model.Channels)
                .Append(ml.Generative.Upscale(model, "Upscaled", "Image", options)).Fit(data).Transform(data), "Image", "Upscaled"));
        Save(pairs.SelectMany(p => new[] { UpscaleCommand.Repeat(p.First, 2), p.Second }).ToList(), 2, path);
    }

    private static void Save(List<MLImage> tiles, int columns, string path)
    {
        using var grid = ImageGrid.Create(tiles, columns: columns, background: 64);
        using var zoomed = UpscaleCommand.Repeat(grid, 3);
        GenerateCommand.SavePng(zoomed, path);
        foreach (var t in tiles) t.Dispose();
    }

    private sealed class Row
    {
        public string Path { get; set; } = "";

        public bool[] Mask { get; set; } = Array.Empty<bool>();
    }
}
