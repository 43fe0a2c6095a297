using System.Diagnostics;
using System.IO.Compression;
using System.Text;

namespace Microsoft.ML.Diffusion.Tests.Reliability;

/// <summary>Helpers of the reliability tests: model weights as bytes, zip and model-file forging, resident memory, the samples app as a child process.</summary>
internal static class ReliabilityKit
{
    public const string WeightsEntry = "TorchWeights.bin";

    /// <summary>The model saved with mlContext.Model.Save, as zip bytes.</summary>
    public static byte[] SaveToBytes(MLContext ml, ITransformer model, DataViewSchema? schema)
    {
        using var stream = new MemoryStream();
        ml.Model.Save(model, schema, stream);
        return stream.ToArray();
    }

    /// <summary>The bytes of the weights stream of a saved model: equal bytes mean bit-identical weights.</summary>
    public static byte[] WeightBytes(MLContext ml, DiffusionModel model, DataViewSchema? schema = null) =>
        Entries(SaveToBytes(ml, model, schema)).Single(e => e.Key.EndsWith(WeightsEntry, StringComparison.Ordinal)).Value;

    /// <summary>The entries of a zip, in order.</summary>
    public static List<KeyValuePair<string, byte[]>> Entries(byte[] zipBytes)
    {
        using var zip = new ZipArchive(new MemoryStream(zipBytes), ZipArchiveMode.Read);
        var result = new List<KeyValuePair<string, byte[]>>();
        foreach (var e in zip.Entries)
        {
            using var s = e.Open();
            using var copy = new MemoryStream();
            s.CopyTo(copy);
            result.Add(new(e.FullName, copy.ToArray()));
        }
        return result;
    }

    /// <summary>A zip of these entries.</summary>
    public static byte[] Zip(IEnumerable<KeyValuePair<string, byte[]>> entries)
    {
        using var stream = new MemoryStream();
        using (var zip = new ZipArchive(stream, ZipArchiveMode.Create, leaveOpen: true))
            foreach (var (name, bytes) in entries)
            {
                using var s = zip.CreateEntry(name).Open();
                s.Write(bytes);
            }
        return stream.ToArray();
    }

    /// <summary>The zip with the entry whose name ends with <paramref name="suffix"/> replaced by <paramref name="change"/>(its bytes).</summary>
    public static byte[] ChangeEntry(byte[] zipBytes, string suffix, Func<byte[], byte[]> change) =>
        Zip(Entries(zipBytes).Select(e => e.Key.EndsWith(suffix, StringComparison.Ordinal) ? new KeyValuePair<string, byte[]>(e.Key, change(e.Value)) : e));

    /// <summary>Loads a model zip from bytes with a fresh MLContext.</summary>
    public static ITransformer Load(byte[] zipBytes) => new MLContext().Model.Load(new MemoryStream(zipBytes), out _);

    // ---- TorchSharp's module format (see Persistence/TorchWeightsFormat): LEB128 count, then name, dtype, rank, dims, data ----

    /// <summary>Offsets in a TorchWeights.bin of the first tensor's rank field and its first dimension field (both LEB128).</summary>
    public static (int RankAt, int RankLength, int Dim0At, int Dim0Length) FirstTensorFields(byte[] weights)
    {
        int p = 0;
        SkipLeb(weights, ref p);                                 // entry count
        int nameLength = 0, shift = 0;                           // BinaryWriter string: 7-bit length, UTF-8
        while (true)
        {
            byte b = weights[p++];
            nameLength |= (b & 0x7F) << shift;
            shift += 7;
            if ((b & 0x80) == 0) break;
        }
        p += nameLength;
        SkipLeb(weights, ref p);                                 // dtype
        int rankAt = p;
        SkipLeb(weights, ref p);
        int dimAt = p;
        SkipLeb(weights, ref p);
        return (rankAt, dimAt - rankAt, dimAt, p - dimAt);
    }

    /// <summary><paramref name="bytes"/> with [at, at + length) replaced by the LEB128 encoding of <paramref name="value"/>.</summary>
    public static byte[] ReplaceLeb(byte[] bytes, int at, int length, long value)
    {
        var encoded = new List<byte>();
        ulong v = (ulong)value;
        do
        {
            byte b = (byte)(v & 0x7F);
            v >>= 7;
            if (v != 0) b |= 0x80;
            encoded.Add(b);
        } while (v != 0);
        return bytes[..at].Concat(encoded).Concat(bytes[(at + length)..]).ToArray();
    }

    private static void SkipLeb(byte[] bytes, ref int p)
    {
        while ((bytes[p++] & 0x80) != 0) { }
    }

    // ---- the DiffusionModel block of Model.key: 0x100-byte ML.NET header, then int32 block version, config JSON string, manifest ----

    /// <summary>Model.key with its config JSON changed by <paramref name="change"/>; the result is padded with spaces (valid JSON) to the
    /// original length, so that no offset in the ML.NET header moves. Fails when the change makes the JSON longer.</summary>
    public static byte[] ChangeConfigJson(byte[] modelKey, Func<string, string> change)
    {
        const int modelStart = 0x100;
        var reader = new BinaryReader(new MemoryStream(modelKey, modelStart + 4, modelKey.Length - modelStart - 4), Encoding.UTF8);
        string json = reader.ReadString();
        int jsonBytes = Encoding.UTF8.GetByteCount(json);
        int prefix = (int)reader.BaseStream.Position - jsonBytes;
        string changed = change(json);
        int changedBytes = Encoding.UTF8.GetByteCount(changed);
        Assert.IsTrue(changedBytes <= jsonBytes, $"the forged config is {changedBytes - jsonBytes} bytes longer than the original");
        var result = (byte[])modelKey.Clone();
        var padded = Encoding.UTF8.GetBytes(changed + new string(' ', jsonBytes - changedBytes));
        padded.CopyTo(result, modelStart + 4 + prefix);
        return result;
    }

    /// <summary>Model.key with the first dimension of the first manifest entry set to <paramref name="value"/>.</summary>
    public static byte[] ChangeFirstManifestDim(byte[] modelKey, long value)
    {
        const int modelStart = 0x100;
        var stream = new MemoryStream(modelKey, modelStart + 4, modelKey.Length - modelStart - 4);
        var reader = new BinaryReader(stream, Encoding.UTF8);
        reader.ReadString();         // config
        reader.ReadInt32();          // count
        reader.ReadString();         // first name
        reader.ReadInt32();          // rank
        int at = modelStart + 4 + (int)stream.Position;
        var result = (byte[])modelKey.Clone();
        BitConverter.GetBytes(value).CopyTo(result, at);
        return result;
    }

    /// <summary>Model.key with the version fields of the ML.NET header (ModelVerWritten at 0x48, ModelVerReadable at 0x4C) set.</summary>
    public static byte[] ChangeVersion(byte[] modelKey, uint written, uint readable)
    {
        var result = (byte[])modelKey.Clone();
        BitConverter.GetBytes(written).CopyTo(result, 0x48);
        BitConverter.GetBytes(readable).CopyTo(result, 0x4C);
        return result;
    }

    /// <summary>
    /// Model.key with the last <paramref name="count"/> bytes of its model block removed (a field that an older format did not
    /// write): the block's size (CbModel at 0x18) shrinks and the offsets of what follows it (string table 0x20, string chars 0x30,
    /// tail 0x80, lim 0x88, assembly name 0x90; ML.NET's ModelHeader) move back, so the ML.NET loader accepts the result.
    /// </summary>
    public static byte[] RemoveLastModelBytes(byte[] modelKey, int count)
    {
        long fpModel = BitConverter.ToInt64(modelKey, 0x10), cbModel = BitConverter.ToInt64(modelKey, 0x18);
        int at = checked((int)(fpModel + cbModel - count));
        var result = modelKey[..at].Concat(modelKey[(at + count)..]).ToArray();
        BitConverter.GetBytes(cbModel - count).CopyTo(result, 0x18);
        foreach (int field in new[] { 0x20, 0x30, 0x80, 0x88, 0x90 })
        {
            long offset = BitConverter.ToInt64(result, field);
            if (offset >= at + count) BitConverter.GetBytes(offset - count).CopyTo(result, field);
        }
        return result;
    }

    /// <summary>
    /// Runs libtorch on one intra-op thread until disposed. On this project's shared 2-core machines (load average 8 to 16 while
    /// other builds run) libtorch's two OpenMP threads wait for each other and a tiny model's step took 30 to 45 times longer
    /// than on one thread; tests whose subject is the loop, not the arithmetic, use one.
    /// </summary>
    public static IDisposable OneTorchThread()
    {
        int before = TorchSharp.torch.get_num_threads();
        TorchSharp.torch.set_num_threads(1);
        return new Restore(() => TorchSharp.torch.set_num_threads(before));
    }

    private sealed class Restore(Action action) : IDisposable
    {
        public void Dispose() => action();
    }

    // ---- memory and processes ----

    /// <summary>VmRSS of this process in bytes, after an aggressive full blocking GC (finalizers run, free managed memory
    /// decommitted), so that collectable garbage and free GC segments do not count.</summary>
    public static long ResidentBytes()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        throw new InvalidOperationException("VmRSS not found in /proc/self/status");
    }

    /// <summary>Starts the samples app with <paramref name="arguments"/>, stdout and stderr redirected.</summary>
    public static Process StartSamples(string arguments)
    {
        var psi = new ProcessStartInfo("dotnet", $"\"{Microsoft.ML.Diffusion.Tests.Persistence.SamplesApp.Path()}\" {arguments}")
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        return Process.Start(psi)!;
    }
}
