using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Persistence;

/// <summary>
/// Checks a stream written by TorchSharp's <c>Module.save</c> before TorchSharp reads it: TorchSharp allocates by the size
/// fields it reads (e.g. <c>new long[rank]</c> for a tensor's rank) and reports a mismatch with a generic message, so a
/// corrupt or forged file could ask for gigabytes or fail unclearly. This reader allocates nothing by a size field: it
/// compares every field with the expected tensors first and skips the data in small chunks.
/// </summary>
/// <remarks>
/// Layout (TorchSharp 0.107, <c>Module.save</c> / <c>TensorExtensionMethods.Save</c>): LEB128 entry count; per entry a
/// .NET BinaryWriter string (the state_dict name), then LEB128 dtype (ScalarType), LEB128 rank, LEB128 dims, then the raw
/// little-endian element bytes.
/// </remarks>
internal static class TorchWeightsFormat
{
    private const int MaxRank = 8;

    /// <summary>
    /// Reads the stream to its last tensor and checks it holds exactly <paramref name="expected"/> (names, ranks, shapes, in any
    /// order) with all their data. Throws <see cref="InvalidDataException"/> naming <paramref name="what"/>, what was found and
    /// what was expected. Returns the number of data bytes.
    /// </summary>
    public static long Check(BinaryReader reader, IReadOnlyList<(string Name, long[] Shape)> expected, string what)
    {
        var byName = new Dictionary<string, long[]>(expected.Count, StringComparer.Ordinal);
        foreach (var (name, shape) in expected) byName[name] = shape;
        try
        {
            long count = Decode(reader, what);
            if (count != byName.Count)
                throw new InvalidDataException($"{what} holds {count} tensors; expected {byName.Count}.");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            var skip = new byte[64 * 1024];
            long bytes = 0;
            for (long i = 0; i < count; i++)
            {
                string name = reader.ReadString();
                if (!byName.TryGetValue(name, out var shape))
                    throw new InvalidDataException($"{what} holds tensor '{name}', which the network does not have.");
                if (!seen.Add(name))
                    throw new InvalidDataException($"{what} holds tensor '{name}' twice.");
                long dtype = Decode(reader, what);
                int elementSize = ElementSize(dtype)
                    ?? throw new InvalidDataException($"{what}: tensor '{name}' has element type code {dtype}; expected a floating-point type.");
                long rank = Decode(reader, what);
                if (rank != shape.Length || rank > MaxRank)
                    throw new InvalidDataException($"{what}: tensor '{name}' has rank {rank}; expected {shape.Length} ([{string.Join(", ", shape)}]).");
                long elements = 1;
                for (int d = 0; d < rank; d++)
                {
                    long dim = Decode(reader, what);
                    if (dim != shape[d])
                        throw new InvalidDataException(
                            $"{what}: tensor '{name}' has size {dim} in dimension {d}; expected shape [{string.Join(", ", shape)}].");
                    elements *= dim;   // equal to a checked expected shape: no overflow
                }
                long remaining = elements * elementSize;
                while (remaining > 0)
                {
                    int n = reader.Read(skip, 0, (int)Math.Min(skip.Length, remaining));
                    if (n <= 0) throw new EndOfStreamException();
                    remaining -= n;
                }
                bytes += elements * elementSize;
            }
            return bytes;
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"{what} is truncated: it ends before its last tensor.", e);
        }
    }

    /// <summary>Total elements of <paramref name="shapes"/>, or an <see cref="InvalidDataException"/> for negative or overflowing sizes.</summary>
    public static long ElementCount(IEnumerable<(string Name, long[] Shape)> shapes, string what)
    {
        long total = 0;
        foreach (var (name, shape) in shapes)
        {
            long n = 1;
            foreach (long d in shape)
            {
                if (d < 0) throw new InvalidDataException($"{what}: tensor '{name}' has a negative size {d}.");
                try
                {
                    n = checked(n * d);
                }
                catch (OverflowException)
                {
                    throw new InvalidDataException($"{what}: tensor '{name}' has shape [{string.Join(", ", shape)}], too large to exist.");
                }
            }
            try
            {
                total = checked(total + n);
            }
            catch (OverflowException)
            {
                throw new InvalidDataException($"{what}: the tensors' sizes add up to more than {long.MaxValue} elements.");
            }
        }
        return total;
    }

    private static int? ElementSize(long dtype) => dtype switch
    {
        (long)ScalarType.Float16 or (long)ScalarType.BFloat16 => 2,
        (long)ScalarType.Float32 => 4,
        (long)ScalarType.Float64 => 8,
        _ => null,
    };

    /// <summary>TorchSharp's LEB128 decoding of a long, at most 10 bytes.</summary>
    private static long Decode(BinaryReader reader, string what)
    {
        long result = 0;
        for (int shift = 0; shift < 70; shift += 7)
        {
            byte b = reader.ReadByte();
            result |= (long)(b & 0x7F) << shift;
            if ((b & 0x80) == 0) return result;
        }
        throw new InvalidDataException($"{what} is corrupt: a size field is longer than 10 bytes.");
    }
}
