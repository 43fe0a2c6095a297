// MSBuild task (compiled by RoslynCodeTaskFactory, see TorchSharp.Native.targets).
//
// TorchSharp 0.107's libLibTorchSharp.so declares a need for GLIBCXX_3.4.32, which Debian 12's libstdc++
// (GLIBCXX_3.4.30) lacks. The only symbol of that version is _ZSt21ios_base_library_initv, which nothing
// calls, so the dependency can be made weak: in the ELF section of type SHT_GNU_verneed (.gnu.version_r)
// the Vernaux entry naming GLIBCXX_3.4.32 gets VER_FLG_WEAK (0x2) in vna_flags. The dynamic loader then
// accepts the library. Only the copy in the build output is patched, never the NuGet cache.
using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class PatchLibTorchSharp : Task
{
    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    /// <summary>Folder searched recursively for libLibTorchSharp.so.</summary>
    [Required]
    public string Directory { get; set; } = "";

    /// <summary>The symbol version to make weak.</summary>
    public string Version { get; set; } = "GLIBCXX_3.4.32";

    public override bool Execute()
    {
        if (!System.IO.Directory.Exists(Directory)) return true;
        foreach (var file in System.IO.Directory.EnumerateFiles(Directory, "libLibTorchSharp.so", SearchOption.AllDirectories))
        {
            try
            {
                int patched = Patch(file, Version);
                if (patched > 0)
                    Log.LogMessage(MessageImportance.Normal, $"Made {Version} weak in {file}");
            }
            catch (Exception e)
            {
                Log.LogWarning($"Could not patch {file}: {e.Message}");
            }
        }
        return !Log.HasLoggedErrors;
    }

    /// <summary>Returns the number of Vernaux entries changed (0 when already weak or absent).</summary>
    public static int Patch(string path, string version)
    {
        byte[] elf = File.ReadAllBytes(path);
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException("only little-endian ELF64 is supported");

        long shoff = (long)BitConverter.ToUInt64(elf, 0x28);
        int shentsize = BitConverter.ToUInt16(elf, 0x3A);
        int shnum = BitConverter.ToUInt16(elf, 0x3C);
        int changed = 0;
        for (int i = 0; i < shnum; i++)
        {
            long sh = shoff + (long)i * shentsize;
            uint type = BitConverter.ToUInt32(elf, (int)sh + 4);
            if (type != ShtGnuVerneed) continue;
            long offset = (long)BitConverter.ToUInt64(elf, (int)sh + 24);
            uint link = BitConverter.ToUInt32(elf, (int)sh + 40);
            uint count = BitConverter.ToUInt32(elf, (int)sh + 44);
            long strtab = (long)BitConverter.ToUInt64(elf, (int)(shoff + (long)link * shentsize) + 24);

            long vn = offset;
            for (uint n = 0; n < count; n++)
            {
                ushort cnt = BitConverter.ToUInt16(elf, (int)vn + 2);
                uint aux = BitConverter.ToUInt32(elf, (int)vn + 8);
                uint next = BitConverter.ToUInt32(elf, (int)vn + 12);
                long va = vn + aux;
                for (int a = 0; a < cnt; a++)
                {
                    ushort flags = BitConverter.ToUInt16(elf, (int)va + 4);
                    uint name = BitConverter.ToUInt32(elf, (int)va + 8);
                    uint vnaNext = BitConverter.ToUInt32(elf, (int)va + 12);
                    if (ReadCString(elf, strtab + name) == version && (flags & VerFlgWeak) == 0)
                    {
                        flags |= VerFlgWeak;
                        elf[va + 4] = (byte)(flags & 0xff);
                        elf[va + 5] = (byte)(flags >> 8);
                        changed++;
                    }
                    if (vnaNext == 0) break;
                    va += vnaNext;
                }
                if (next == 0) break;
                vn += next;
            }
        }
        if (changed > 0)
        {
            // Atomic replace: a concurrent loader never sees a half-written library.
            string tmp = path + ".patching";
            File.WriteAllBytes(tmp, elf);
            File.Replace(tmp, path, null);
        }
        return changed;
    }

    private static string ReadCString(byte[] data, long at)
    {
        long end = at;
        while (end < data.Length && data[end] != 0) end++;
        return Encoding.ASCII.GetString(data, (int)at, (int)(end - at));
    }
}
