using System.Reflection;
using Microsoft.ML.Data;
using System.Runtime.ExceptionServices;

namespace Microsoft.ML.Diffusion.Persistence;

/// <summary>
/// Loads a model zip with <c>mlContext.Model.Load</c> and turns its failures into exceptions that name the file: ML.NET calls
/// a component's loader by reflection, so a component's clear error reaches the caller wrapped in a
/// <see cref="TargetInvocationException"/>, and a damaged zip gives a <see cref="FormatException"/> that names no file.
/// </summary>
internal static class ModelFileLoader
{
    public static ITransformer Load(MLContext ml, string path, out DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(ml);
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path))
            throw new FileNotFoundException($"The model file '{path}' was not found.", path);
        try
        {
            using var stream = File.OpenRead(path);
            return ml.Model.Load(stream, out inputSchema);
        }
        catch (Exception e)
        {
            var inner = e;
            while (inner is TargetInvocationException { InnerException: { } next }) inner = next;
            if (inner is InvalidDataException)
                throw new InvalidDataException($"Model '{path}': {inner.Message}", inner);
            if (inner is FormatException or EndOfStreamException)
                throw new InvalidDataException($"Model '{path}' is not a readable ML.NET model zip (damaged, truncated or another kind of file): {inner.Message}", inner);
            if (!ReferenceEquals(inner, e)) ExceptionDispatchInfo.Capture(inner).Throw();
            throw;
        }
    }

    public static DiffusionModel LoadDiffusionModel(MLContext ml, string path, out DataViewSchema inputSchema)
    {
        var loaded = Load(ml, path, out inputSchema);
        var model = loaded as DiffusionModel
            ?? (loaded as TransformerChain<ITransformer>)?.LastTransformer as DiffusionModel;
        if (model is null)
        {
            (loaded as IDisposable)?.Dispose();
            throw new InvalidDataException($"Model '{path}' holds a {loaded.GetType().Name}, not a DiffusionModel.");
        }
        return model;
    }
}
