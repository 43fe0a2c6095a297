using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Finds the <see cref="DiffusionModel"/> in what <c>mlContext.Model.Load</c> returns. A pipeline saved with
/// <c>mlContext.Model.Save</c> (LoadImages -> ResizeImages -> ... -> Diffusion) loads as a <see cref="TransformerChain{TLastTransformer}"/>,
/// so <c>(DiffusionModel)mlContext.Model.Load(...)</c> only works for a model saved alone.
/// </summary>
public static class DiffusionTransformerExtensions
{
    /// <summary>
    /// The diffusion model in <paramref name="transformer"/>: the transformer itself, the last one found in a
    /// <see cref="TransformerChain{TLastTransformer}"/> (searched from its end, nested chains included), or the model an
    /// <see cref="ImageToImageTransformer"/> (inpainting, upscaling, image-to-image) samples with. The model stays part of
    /// <paramref name="transformer"/>: it is not a copy.
    /// </summary>
    /// <exception cref="InvalidOperationException">No diffusion model is there; the message lists what was found.</exception>
    public static DiffusionModel GetDiffusionModel(this ITransformer transformer)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        return TryGetDiffusionModel(transformer, out var model)
            ? model
            : throw new InvalidOperationException(
                $"The transformer holds no DiffusionModel: found {Describe(transformer)}. Expected a DiffusionModel (what " +
                "mlContext.Generative.Diffusion(...).Fit returns), or a pipeline (TransformerChain) that contains one.");
    }

    /// <summary>Like <see cref="GetDiffusionModel"/>, without throwing: false when <paramref name="transformer"/> holds none.</summary>
    public static bool TryGetDiffusionModel(this ITransformer transformer, out DiffusionModel model)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        switch (transformer)
        {
            case DiffusionModel d:
                model = d;
                return true;
            case ImageToImageTransformer mapping:
                model = mapping.Model;
                return true;
            case IEnumerable<ITransformer> chain:
                foreach (var part in chain.Reverse())
                    if (part is not null && TryGetDiffusionModel(part, out model)) return true;
                break;
        }
        model = null!;
        return false;
    }

    /// <summary>The transformer's type, and for a chain its parts' types (nested chains in brackets), in order.</summary>
    internal static string Describe(ITransformer transformer) => transformer switch
    {
        IEnumerable<ITransformer> chain => $"a TransformerChain of [{string.Join(", ", chain.Select(t => t is null ? "null" : Describe(t)))}]",
        _ => transformer.GetType().Name,
    };
}
