using Microsoft.ML.Runtime;
using TorchSharp;

namespace Microsoft.ML.Diffusion.Persistence;

/// <summary>
/// The weight manifest written before a network's weights in a model zip (<see cref="Transforms.DiffusionModelFormat"/>,
/// <see cref="Transforms.AutoencoderFormat"/>): the tensor count, then per tensor its name, rank and shape. A loader checks the weights
/// stream against it (<see cref="TorchWeightsFormat"/>) and the network built from the config against both before anything is
/// allocated by a size read from the file.
/// </summary>
internal static class WeightManifest
{
    /// <summary>int: number of tensors; then for each: string name, int rank, long[rank] shape.</summary>
    public static void Write(BinaryWriter writer, torch.nn.Module module)
    {
        var state = module.state_dict();
        writer.Write(state.Count);
        foreach (var (name, t) in state)
        {
            writer.Write(name);
            writer.Write((int)t.dim());
            foreach (var d in t.shape) writer.Write(d);
        }
    }

    /// <summary>Reads a manifest written by <see cref="Write"/>, with bounds on every count.</summary>
    public static List<(string Name, long[] Shape)> Read(BinaryReader reader)
    {
        int count = reader.ReadInt32();
        if (count < 0 || count > 100_000)
            throw new InvalidDataException($"The model's weight manifest lists {count} tensors; the file is corrupt.");
        var manifest = new List<(string Name, long[] Shape)>(Math.Min(count, 4096));
        for (int i = 0; i < count; i++)
        {
            string name = reader.ReadString();
            int rank = reader.ReadInt32();
            if (rank < 0 || rank > 8) throw new InvalidDataException($"Weight '{name}' has rank {rank}; the file is corrupt.");
            var shape = new long[rank];
            for (int d = 0; d < rank; d++) shape[d] = reader.ReadInt64();
            manifest.Add((name, shape));
        }
        return manifest;
    }

    /// <summary>Throws unless <paramref name="module"/>'s state holds exactly the manifest's names and shapes.</summary>
    public static void CheckModule(torch.nn.Module module, IReadOnlyList<(string Name, long[] Shape)> manifest)
    {
        var state = module.state_dict();
        if (state.Count != manifest.Count)
            throw new InvalidDataException($"The zip holds {manifest.Count} weight tensors but its network config needs {state.Count}; the file is corrupt or from another model.");
        foreach (var (name, shape) in manifest)
        {
            if (!state.TryGetValue(name, out var t))
                throw new InvalidDataException($"The zip holds weight '{name}', which the network config does not have; the file is corrupt or from another model.");
            if (!t.shape.SequenceEqual(shape))
                throw new InvalidDataException($"Weight '{name}' has shape [{string.Join(", ", shape)}] in the zip; the network config needs [{string.Join(", ", t.shape)}].");
        }
    }

    /// <summary>Runs <paramref name="read"/> on the stream <paramref name="streamName"/>; a missing, truncated or corrupt stream
    /// gives an <see cref="InvalidDataException"/> that names it.</summary>
    public static void ReadStream(ModelLoadContext ctx, string streamName, Action<BinaryReader> read, string what)
    {
        bool found;
        try
        {
            found = ctx.TryLoadBinaryStream(streamName, read);
        }
        catch (Exception e) when (e is EndOfStreamException or ArgumentException or IOException && !e.Message.StartsWith(what, StringComparison.Ordinal))
        {
            throw new InvalidDataException($"{what} is truncated or corrupt: {e.Message}", e);
        }
        if (!found)
            throw new InvalidDataException($"The model zip has no '{streamName}' stream; it holds no weights.");
    }
}
