using System.Buffers.Binary;
using System.IO.Compression;

namespace Microsoft.ML.Diffusion.Samples.Data;

/// <summary>Reads IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed, as a stream of records.</summary>
public static class IdxReader
{
    /// <summary>Yields each 2-D image of an idx3-ubyte file as a row-major byte array; reads lazily.</summary>
    public static IEnumerable<byte[]> ReadImages(string path, int? limit = null)
    {
        using var stream = Open(path);
        var header = ReadExactly(stream, 16, path);
        int magic = BinaryPrimitives.ReadInt32BigEndian(header);
        if (magic != 0x00000803)
            throw new InvalidDataException($"'{path}' is not an IDX image file (magic 0x{magic:X8}, expected 0x00000803).");
        int count = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(4));
        int rows = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(8));
        int cols = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(12));
        int n = limit is int l ? Math.Min(l, count) : count;
        for (int i = 0; i < n; i++)
            yield return ReadExactly(stream, rows * cols, path);
    }

    /// <summary>Yields the labels of an idx1-ubyte file.</summary>
    public static IEnumerable<byte> ReadLabels(string path, int? limit = null)
    {
        using var stream = Open(path);
        var header = ReadExactly(stream, 8, path);
        int magic = BinaryPrimitives.ReadInt32BigEndian(header);
        if (magic != 0x00000801)
            throw new InvalidDataException($"'{path}' is not an IDX label file (magic 0x{magic:X8}, expected 0x00000801).");
        int count = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(4));
        int n = limit is int l ? Math.Min(l, count) : count;
        for (int i = 0; i < n; i++)
            yield return ReadExactly(stream, 1, path)[0];
    }

    /// <summary>The (count, rows, cols) of an idx3 image file.</summary>
    public static (int Count, int Rows, int Cols) ReadImageHeader(string path)
    {
        using var stream = Open(path);
        var header = ReadExactly(stream, 16, path);
        return (BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(4)), BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(8)),
            BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(12)));
    }

    private static Stream Open(string path)
    {
        Stream s = new BufferedStream(File.OpenRead(path), 1 << 16);
        return path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? new GZipStream(s, CompressionMode.Decompress) : s;
    }

    private static byte[] ReadExactly(Stream s, int n, string path)
    {
        var buffer = new byte[n];
        try
        {
            s.ReadExactly(buffer);
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException($"'{path}' is truncated.", e);
        }
        return buffer;
    }
}
