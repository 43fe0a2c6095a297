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

    /// <summary>
    /// VmRSS after an aggressive full blocking collection (finalizers run, large-object heap compacted, free memory decommitted),
    /// so that readings show memory still in use, not garbage waiting to be collected or free managed segments kept by the GC.
    /// </summary>
    public static long ResidentBytesAfterGc()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        return ResidentBytes();
    }
}
