namespace Microsoft.ML.Diffusion.Common;

/// <summary>Writes a file through a temporary file next to it, so an interrupted or failed write leaves the previous file (or
/// none), never a partial one.</summary>
internal static class AtomicFile
{
    /// <summary>Calls <paramref name="write"/> on <c>path.tmp</c>, then moves it over <paramref name="path"/>; on failure the
    /// temporary file is deleted and the exception propagates.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(write);
        string temp = path + ".tmp";
        try
        {
            using (var file = File.Create(temp)) write(file);
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }
}
