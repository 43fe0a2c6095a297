using Microsoft.ML.Runtime;
using Microsoft.ML.Diffusion.Transforms;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// The shared part of the estimators of the image-to-image transformers (<see cref="InpaintingEstimator"/>,
/// <see cref="UpscalingEstimator"/>, <see cref="SdeditEstimator"/>): nothing is trained; <see cref="Fit"/> checks the input schema and returns the
/// transformer over the given <see cref="DiffusionModel"/>, which stays the caller's.
/// </summary>
/// <typeparam name="TTransformer">The transformer <see cref="Fit"/> returns.</typeparam>
public abstract class ImageToImageEstimator<TTransformer> : IEstimator<TTransformer>
    where TTransformer : ImageToImageTransformer
{
    private protected ImageToImageEstimator(IHostEnvironment env, DiffusionModel model, string outputColumnName, string imageColumnName)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(outputColumnName);
        ArgumentException.ThrowIfNullOrEmpty(imageColumnName);
        Env = env;
        Model = model;
        OutputColumnName = outputColumnName;
        ImageColumnName = imageColumnName;
    }

    private protected IHostEnvironment Env { get; }

    private protected DiffusionModel Model { get; }

    private protected string OutputColumnName { get; }

    private protected string ImageColumnName { get; }

    /// <summary>A transformer over <see cref="Model"/> (not owned) with this estimator's columns and options.</summary>
    private protected abstract TTransformer CreateTransformer();

    /// <summary>Checks the input columns on a <see cref="SchemaShape"/>; throws, naming the column, the size or type found and the one expected.</summary>
    private protected abstract void CheckInput(SchemaShape inputSchema);

    /// <summary>Checks the input columns and returns the transformer (nothing is trained).</summary>
    public TTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var transformer = CreateTransformer();
        transformer.GetOutputSchema(input.Schema);
        return transformer;
    }

    /// <summary>The input columns plus the output image column (model size).</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        CheckInput(inputSchema);
        return ImageMapping.OutputSchema(inputSchema, OutputColumnName, Model.ImageSize);
    }
}
