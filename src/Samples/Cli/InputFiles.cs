using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion.Samples.Cli;

/// <summary>
/// Opens the files the commands take (model zips, images, weights) and turns every way they can be wrong (missing, truncated,
/// another kind of file) into a <see cref="CliException"/> that names the option and the file.
/// </summary>
public static class InputFiles
{
    /// <summary>What an image option expects.</summary>
    public const string ImageFile = "an image file (PNG, JPEG or BMP)";

    /// <summary>What a <c>--model</c> option expects.</summary>
    public const string DiffusionModelFile = "a diffusion model zip written by train";

    /// <summary>Throws when <paramref name="path"/> is not an existing file.</summary>
    /// <param name="path">The file.</param>
    /// <param name="option">The option that named it, e.g. <c>--model</c>.</param>
    /// <param name="what">What the file should be, with its article, e.g. "a model zip".</param>
    public static string RequireFile(string path, string option, string what)
    {
        if (Directory.Exists(path)) throw new CliException($"{option} '{path}' is a folder; expected {what}.");
        if (!File.Exists(path)) throw new CliException($"{option} '{path}' was not found; expected {what}.");
        return path;
    }

    /// <summary>Throws when <paramref name="path"/> is not an existing folder.</summary>
    public static string RequireDirectory(string path, string option, string what)
    {
        if (!Directory.Exists(path)) throw new CliException($"{option} '{path}' is not a folder; expected {what}.");
        return path;
    }

    /// <summary>Throws unless <paramref name="directory"/> (the <c>--data</c> option) holds the Fashion-MNIST IDX files of <paramref name="splits"/>.</summary>
    public static void RequireFashionMnist(string directory, params string[] splits)
    {
        try
        {
            foreach (var split in splits)
            {
                Data.FashionMnist.ImagesPath(directory, split);
                Data.FashionMnist.LabelsPath(directory, split);
            }
        }
        catch (FileNotFoundException e)
        {
            throw new CliException($"--data: {e.Message}", e);
        }
    }

    /// <summary>Loads a <see cref="DiffusionModel"/> zip with the library's checked loader.</summary>
    /// <param name="ml">The context to load with.</param>
    /// <param name="path">The model zip.</param>
    /// <param name="option">The option that named it.</param>
    public static DiffusionModel LoadDiffusionModel(MLContext ml, string path, string option = "--model")
    {
        RequireFile(path, option, DiffusionModelFile);
        try
        {
            return ml.Generative.LoadDiffusionModel(path);
        }
        catch (Exception e) when (e is not CliException)
        {
            throw BadModel(option, path, DiffusionModelFile, e);
        }
    }

    /// <summary>Loads a model zip that must hold a <typeparamref name="T"/>, with the library's checked loader.</summary>
    /// <param name="ml">The context to load with.</param>
    /// <param name="path">The model zip.</param>
    /// <param name="option">The option that named it.</param>
    /// <param name="what">What the zip should hold, with its article, e.g. "a noisy classifier zip written by train-noisy-classifier".</param>
    public static T LoadModel<T>(MLContext ml, string path, string option, string what) where T : class, ITransformer
    {
        RequireFile(path, option, what);
        ITransformer loaded;
        try
        {
            loaded = ml.Generative.LoadModel(path, out _);
        }
        catch (Exception e) when (e is not CliException)
        {
            throw BadModel(option, path, what, e);
        }
        var model = loaded as T ?? (loaded as TransformerChain<ITransformer>)?.LastTransformer as T;
        if (model is null)
        {
            (loaded as IDisposable)?.Dispose();
            throw new CliException($"{option} '{path}' holds a {loaded.GetType().Name}; expected {what}.");
        }
        return model;
    }

    /// <summary>Checks that <paramref name="path"/> is a readable image and returns its size.</summary>
    public static (int Width, int Height) RequireImage(string path, string option)
    {
        RequireFile(path, option, ImageFile);
        try
        {
            using var image = MLImage.CreateFromFile(path);
            return (image.Width, image.Height);
        }
        catch (Exception e) when (e is not CliException)
        {
            // MLImage reports an unreadable file as an invalid path: say what is wrong instead (--verbose shows its message).
            throw new CliException($"{option} '{path}' is not a readable image; expected {ImageFile}.", e);
        }
    }

    /// <summary>A model zip that failed to load, as one line: a valid zip that holds no ML.NET model is named as such.</summary>
    private static CliException BadModel(string option, string path, string what, Exception e)
    {
        if (!IsZipWithoutModel(path)) return Bad(option, path, what, e);
        string cause = CliErrors.OneLine(CliErrors.Unwrap(e).Message).TrimEnd('.');
        return new CliException($"{option} '{path}' is a zip archive but not an ML.NET model ({cause}); expected {what}.", e);
    }

    private static bool IsZipWithoutModel(string path)
    {
        try
        {
            using var zip = System.IO.Compression.ZipFile.OpenRead(path);
            return !zip.Entries.Any(entry => entry.FullName.StartsWith("TransformerChain/", StringComparison.Ordinal)
                                              || entry.FullName.StartsWith("Model/", StringComparison.Ordinal));
        }
        catch (Exception)
        {
            return false;
        }
    }

    /// <summary>A failure to read <paramref name="path"/>, as one line that names the option, the file and what was expected.</summary>
    public static CliException Bad(string option, string path, string what, Exception e)
    {
        string cause = CliErrors.OneLine(CliErrors.Unwrap(e).Message).TrimEnd('.');
        // The library's checked loader already names the file ("Model 'x.zip' is not ..."); other readers may not.
        string detail = cause.Contains($"'{path}'", StringComparison.Ordinal) ? $"{option}: {cause}" : $"{option} '{path}': {cause}";
        return new CliException($"{detail}; expected {what}.", e);
    }
}
