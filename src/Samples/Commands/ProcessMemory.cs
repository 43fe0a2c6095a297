namespace Microsoft.ML.Diffusion.Samples.Commands;

/// <summary>The process's resident memory, from /proc/self/status (Linux).</summary>
public static class ProcessMemory
{
    /// <summary>VmRSS in bytes, or -1 where /proc is not available.</summary>
    public static long ResidentBytes()
    {
        const string status = "/proc/self/status";
        if (!File.Exists(status)) return -1;
        foreach (var line in File.ReadLines(status))
        {
            if (!line.StartsWith("VmRSS:", StringComparison.Ordinal)) continue;
            var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);   // "VmRSS:", "123456", "kB"
            return long.Parse(parts[1]) * 1024;
        }
        return -1;
    }

    /// <summary>A full blocking collection, so that RSS readings are not moved by managed garbage waiting to be collected.</summary>
    public static long ResidentBytesAfterGc()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return ResidentBytes();
    }
}
