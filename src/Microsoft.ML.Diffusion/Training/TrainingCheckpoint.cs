using System.Text;

namespace Microsoft.ML.Diffusion.Training;

/// <summary>
/// Training checkpoints in a directory: one file, <c>checkpoint.bin</c>, always complete. It is written to a
/// temporary file, flushed to disk, then renamed over the old one, so a crash leaves the previous checkpoint.
/// </summary>
internal static class TrainingCheckpoint
{
    private const string Magic = "MLDIFFCK";
    private const int FormatVersion = 1;

    /// <summary>The checkpoint file's name inside the checkpoint directory.</summary>
    public const string FileName = "checkpoint.bin";

    /// <summary>Path of the checkpoint file in <paramref name="directory"/>.</summary>
    public static string PathIn(string directory) => Path.Combine(directory, FileName);

    /// <summary>Whether <paramref name="directory"/> holds a checkpoint.</summary>
    public static bool Exists(string directory) => File.Exists(PathIn(directory));

    /// <summary>
    /// Atomically writes a checkpoint: <paramref name="configJson"/> identifies the run (resuming with other
    /// settings is refused), <paramref name="epoch"/> and <paramref name="batchInEpoch"/> locate the data position.
    /// </summary>
    public static void Write(string directory, string configJson, long dataSeed, int epoch, long batchInEpoch, TrainingLoop loop)
    {
        Directory.CreateDirectory(directory);
        string final = PathIn(directory);
        string tmp = final + ".tmp";
        using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            using (var w = new BinaryWriter(fs, Encoding.UTF8, leaveOpen: true))
            {
                w.Write(Encoding.ASCII.GetBytes(Magic));   // 8 bytes: magic
                w.Write(FormatVersion);                     // int: format version
                w.Write(configJson);                        // string: the run's settings
                w.Write(dataSeed);                          // long: seed of the data order
                w.Write(epoch);                             // int: epoch (0-based) in progress
                w.Write(batchInEpoch);                      // long: batches of that epoch done
                loop.SaveState(w);                          // loop state
                w.Write(Encoding.ASCII.GetBytes(Magic));   // 8 bytes: end marker (detects truncation)
            }
            fs.Flush(flushToDisk: true);
        }
        File.Move(tmp, final, overwrite: true);
    }

    /// <summary>Restores <paramref name="loop"/> from the checkpoint and returns its data position.</summary>
    public static (long DataSeed, int Epoch, long BatchInEpoch) Load(string directory, string expectedConfigJson, TrainingLoop loop)
    {
        string path = PathIn(directory);
        using var fs = File.OpenRead(path);
        using var r = new BinaryReader(fs, Encoding.UTF8);
        var (config, seed, epoch, batch) = ReadHeader(r, path);
        if (config != expectedConfigJson)
            throw new InvalidOperationException(
                $"The checkpoint in '{directory}' was written with other training options and cannot be resumed with these.\n" +
                $"Checkpoint: {config}\nNow:        {expectedConfigJson}\nUse the same options, or another CheckpointDirectory.");
        try
        {
            loop.LoadState(r);
            var end = r.ReadBytes(8);
            if (Encoding.ASCII.GetString(end) != Magic)
                throw new InvalidDataException("its end marker is missing");
        }
        catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException or InvalidOperationException or System.Runtime.InteropServices.ExternalException)
        {
            // A checkpoint is renamed into place only once complete (see Write): this one was damaged afterwards.
            throw new InvalidDataException(
                $"Checkpoint '{path}' is truncated or corrupt ({e.Message.TrimEnd('.')}). Delete it, or use another CheckpointDirectory, to start over.", e);
        }
        return (seed, epoch, batch);
    }

    private static (string, long, int, long) ReadHeader(BinaryReader r, string path)
    {
        try
        {
            var magic = Encoding.ASCII.GetString(r.ReadBytes(8));
            if (magic != Magic) throw new InvalidDataException($"'{path}' is not a diffusion training checkpoint.");
            int version = r.ReadInt32();
            if (version != FormatVersion)
                throw new InvalidDataException($"Checkpoint '{path}' has format version {version}; this release reads version {FormatVersion}.");
            return (r.ReadString(), r.ReadInt64(), r.ReadInt32(), r.ReadInt64());
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"Checkpoint '{path}' is truncated.", e);
        }
    }
}
