using System.Diagnostics;
using System.Xml.Linq;
using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion.Tests.Packaging;

/// <summary>
/// The NuGet package as a new user meets it: packs the library, builds the app in test/PackageConsumer in a temporary folder
/// against the package from a local feed (plus TorchSharp-cpu and nothing else from this repository), with the package's entry
/// cleared from the NuGet cache first, and runs its scenario in fresh processes: LoadImages -> ResizeImages -> train -> save
/// the pipeline, then load -> PredictionEngine -> Inpaint -> Upscale. On Debian 12 this also proves that the package's
/// buildTransitive targets patched the app's copy of libLibTorchSharp.so (without them the first tensor op fails).
/// </summary>
[TestClass]
public sealed class PackageConsumerTests
{
    private const string PackageId = "Microsoft.ML.Diffusion";
    private const string Version = "0.1.0";

    [TestMethod]
    [Timeout(600_000, CooperativeCancellation = true)]
    public void PackageWorksInANewConsoleApp()
    {
        string repo = RepoRoot();
        string config = AppContext.BaseDirectory.Contains("/Debug/") ? "Debug" : "Release";
        string work = TestData.TempDirectory("package-consumer");
        try
        {
            string feed = Path.Combine(work, "feed"), app = Path.Combine(work, "app"), images = Path.Combine(work, "images");
            Directory.CreateDirectory(app);
            Directory.CreateDirectory(images);

            Run(repo, "dotnet", $"pack src/{PackageId}/{PackageId}.csproj -c {config} --no-build -o \"{feed}\"");
            string nupkg = Path.Combine(feed, $"{PackageId}.{Version}.nupkg");
            Assert.IsTrue(File.Exists(nupkg), "dotnet pack wrote no " + nupkg);
            Console.WriteLine($"package: {new FileInfo(nupkg).Length / 1024} KB ({nupkg})");
            using (var zip = System.IO.Compression.ZipFile.OpenRead(nupkg))
            {
                var entries = zip.Entries.Select(e => e.FullName).ToHashSet();
                foreach (string expected in new[] { $"buildTransitive/{PackageId}.targets", "buildTransitive/PatchLibTorchSharpTask.cs", $"lib/net10.0/{PackageId}.dll", "README.md" })
                    Assert.Contains(expected, entries, $"the package lacks {expected}");
            }

            // A clean cache entry: the app must restore the package just packed, not an older copy.
            string cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } custom
                ? custom : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
            string entry = Path.Combine(cache, PackageId.ToLowerInvariant());
            if (Directory.Exists(entry)) Directory.Delete(entry, recursive: true);

            string template = Path.Combine(repo, "test", "PackageConsumer");
            File.Copy(Path.Combine(template, "Program.cs"), Path.Combine(app, "Program.cs"));
            File.WriteAllText(Path.Combine(app, "PackageConsumer.csproj"),
                File.ReadAllText(Path.Combine(template, "PackageConsumer.csproj.in")).Replace("@VERSION@", Version));
            File.WriteAllText(Path.Combine(app, "nuget.config"), NuGetConfig(repo, feed));
            foreach (string png in Directory.GetFiles(Path.Combine(repo, "src", "Samples", "Images"), "*.png"))
                File.Copy(png, Path.Combine(images, Path.GetFileName(png)));

            Run(app, "dotnet", "build -c Release");
            string dll = Path.Combine(app, "bin", "Release", "net10.0", "PackageConsumer.dll");
            string model = Path.Combine(work, "model.zip");

            string trained = Run(app, "dotnet", $"\"{dll}\" train \"{images}\" \"{model}\"");
            Console.WriteLine(trained);   // the scenario's output and timings, kept in the test results
            StringAssert.Contains(trained, "train: saved");
            Assert.IsTrue(new FileInfo(model).Length > 10_000, "the saved pipeline holds no weights");

            string outA = Path.Combine(work, "out-a"), outB = Path.Combine(work, "out-b");
            string used = Run(app, "dotnet", $"\"{dll}\" use \"{model}\" \"{images}\" \"{outA}\"");
            Console.WriteLine(used);
            StringAssert.Contains(used, "loaded a TransformerChain");
            foreach (string name in new[] { "generated-0", "generated-1", "generated-2", "inpainted-bag", "inpainted-boot", "upscaled-bag", "upscaled-boot" })
            {
                StringAssert.Contains(used, $"{name}: 16x16");
                using var image = MLImage.CreateFromFile(Path.Combine(outA, name + ".png"));
                Assert.AreEqual(16, image.Width, name);
                Assert.AreEqual(16, image.Height, name);
            }

            // A second fresh process generates the same pixels from the same seeds.
            Run(app, "dotnet", $"\"{dll}\" use \"{model}\" \"{images}\" \"{outB}\"");
            foreach (string name in new[] { "generated-0", "inpainted-bag", "upscaled-boot" })
            {
                using var a = MLImage.CreateFromFile(Path.Combine(outA, name + ".png"));
                using var b = MLImage.CreateFromFile(Path.Combine(outB, name + ".png"));
                CollectionAssert.AreEqual(a.GetBGRPixels, b.GetBGRPixels, $"{name} differs between processes");
            }

            // Without the package's patch step, on a libstdc++ older than TorchSharp asks for, the library says why and what to do
            // (TorchSharp alone blames a missing libtorch-cpu reference).
            if (OperatingSystem.IsLinux() && !SystemLibStdCxxHas("GLIBCXX_3.4.32"))
            {
                string unpatched = Path.Combine(work, "unpatched");
                Run(app, "dotnet", $"build -c Release -p:MLNetDiffusionPatchLibTorchSharp=false -o \"{unpatched}\"");
                var (code, _, stderr) = RunUnchecked(app, "dotnet", $"\"{Path.Combine(unpatched, "PackageConsumer.dll")}\" train \"{images}\" \"{model}\"");
                Assert.AreNotEqual(0, code);
                StringAssert.Contains(stderr, "System.InvalidOperationException: ");
                StringAssert.Contains(stderr, "GLIBCXX_3.4.32");
                StringAssert.Contains(stderr, "was not patched");
            }
        }
        finally
        {
            try { Directory.Delete(work, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>The local feed first, then this repository's own package sources (the registry the tests restore from).</summary>
    private static string NuGetConfig(string repo, string feed)
    {
        var sources = XDocument.Load(Path.Combine(repo, "nuget.config"))
            .Descendants("packageSources").Elements("add").Select(e => e.ToString());
        return $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <clear />
                <add key="local" value="{feed}" />
                {string.Join("\n    ", sources)}
              </packageSources>
            </configuration>
            """;
    }

    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null && !File.Exists(Path.Combine(dir.FullName, "Diffusion.MLNet.sln"))) dir = dir.Parent;
        Assert.IsNotNull(dir, "repository root not found above " + AppContext.BaseDirectory);
        return dir.FullName;
    }

    private static bool SystemLibStdCxxHas(string version)
    {
        string? lib = new[] { "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/aarch64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6" }
            .FirstOrDefault(File.Exists);
        if (lib is null) return true; // unknown layout: do not assert the failure
        byte[] bytes = File.ReadAllBytes(lib), needle = System.Text.Encoding.ASCII.GetBytes(version + "\0");
        return bytes.AsSpan().IndexOf(needle) >= 0;
    }

    /// <summary>Runs a command, without the MSBuild variables of the test host, and fails the test with its output unless it exits 0.</summary>
    private static string Run(string directory, string file, string arguments)
    {
        var (code, stdout, stderr) = RunUnchecked(directory, file, arguments);
        Assert.AreEqual(0, code, $"{file} {arguments} (in {directory}) exited {code}:\n{stdout}\n{stderr}");
        return stdout;
    }

    private static (int ExitCode, string Stdout, string Stderr) RunUnchecked(string directory, string file, string arguments)
    {
        var start = new ProcessStartInfo(file, arguments)
        {
            WorkingDirectory = directory, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (string key in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList())
            start.Environment.Remove(key);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, stdout, stderr.Result);
    }
}
