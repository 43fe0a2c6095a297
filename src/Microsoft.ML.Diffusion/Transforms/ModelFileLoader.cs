using System.Reflection;
using Microsoft.ML.Data;
using System.Runtime.ExceptionServices;

namespace Microsoft.ML.Diffusion.Transforms;

/// <summary>
/// Loads a model zip with <c>mlContext.Model.Load</c> and turns its failures into exceptions that name the file: ML.NET calls
/// a component's loader by reflection, so a component's clear error reaches the caller wrapped in a
/// <see cref="TargetInvocationException"/>, and a damaged zip gives a <see cref="FormatException"/> that names no file.
/// </summary>
internal static class ModelFileLoader
{
    /// <summary>What a diffusion model file is, for error messages.</summary>
    private const string ExpectedDiffusionModel =
        "Expected a zip written by mlContext.Model.Save from a DiffusionModel (what mlContext.Generative.Diffusion(...).Fit returns) " +
        "or from a pipeline (TransformerChain) that contains one.";

    public static ITransformer Load(MLContext ml, string path, out DataViewSchema inputSchema) =>
        Load(ml, path, out inputSchema, "Expected a zip written by mlContext.Model.Save.");

    private static ITransformer Load(MLContext ml, string path, out DataViewSchema inputSchema, string expected)
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
                throw new InvalidDataException(
                    $"Model '{path}' is not a readable ML.NET model zip (damaged, truncated or another kind of file): {Sentence(inner.Message)} {expected}", inner);
            // A zip ML.NET cannot make a model of (other files, no model entry, a component this process cannot load):
            // ML.NET's own errors name neither the file nor what was expected. Failures of the process itself
            // (memory, native libraries, cancellation) pass through unchanged.
            if (inner is InvalidOperationException or ArgumentException or KeyNotFoundException or NotSupportedException)
                throw new InvalidDataException($"Model '{path}' could not be loaded: {Sentence(inner.Message)} {expected}", inner);
            if (!ReferenceEquals(inner, e)) ExceptionDispatchInfo.Capture(inner).Throw();
            throw;
        }
    }

    public static DiffusionModel LoadDiffusionModel(MLContext ml, string path, out DataViewSchema inputSchema)
    {
        var loaded = Load(ml, path, out inputSchema, ExpectedDiffusionModel);
        if (loaded.TryGetDiffusionModel(out var model)) return model;
        string found = DiffusionTransformerExtensions.Describe(loaded);
        (loaded as IDisposable)?.Dispose();
        throw new InvalidDataException($"Model '{path}' holds {found}, not a DiffusionModel. {ExpectedDiffusionModel}");
    }

    private static string Sentence(string message) => message.TrimEnd().EndsWith('.') ? message.TrimEnd() : message.TrimEnd() + ".";
}
