using System.Diagnostics;

namespace Microsoft.ML.Diffusion.Tests.Cli;

/// <summary><c>generate --sampler NAME</c> accepts every name of the sampler registry and writes a grid with the bundled model.</summary>
[TestClass]
public sealed class CliSamplerTests
{
    [TestMethod]
    [DataRow("euler-karras", "")]
    [DataRow("heun-karras", "")]
    [DataRow("euler-ancestral", "")]
    [DataRow("dpm-solver++-karras", "")]
    [DataRow("dpm-solver++-sde", "--lu-lambdas")]
    [DataRow("unipc", "--karras-sigmas --final-sigmas SigmaMin")]
    public void GenerateAcceptsTheNewSamplerNames(string name, string extra)
    {
        string dir = Path.Combine(Path.GetTempPath(), "cli-sampler-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            string png = Path.Combine(dir, "grid.png");
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { Persistence.SamplesApp.Path(), "generate", "--model", CliBadInputTests.BundledModel, "--count", "2", "--sampler", name, "--steps", "3", "--out", png }
                         .Concat(extra.Split(' ', StringSplitOptions.RemoveEmptyEntries)))
                psi.ArgumentList.Add(a);
            psi.Environment["NO_COLOR"] = "1";
            using var child = Process.Start(psi)!;
            var stderr = child.StandardError.ReadToEndAsync();
            string stdout = child.StandardOutput.ReadToEnd();
            Assert.IsTrue(child.WaitForExit(120_000), "generate ran for more than two minutes");
            string log = stdout + stderr.Result;
            Assert.AreEqual(0, child.ExitCode, log);
            Assert.IsTrue(File.Exists(png), log);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [TestMethod]
    public void HelpListsTheRegistrysNames()
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { Persistence.SamplesApp.Path(), "generate", "--help" }) psi.ArgumentList.Add(a);
        using var child = Process.Start(psi)!;
        string output = child.StandardOutput.ReadToEnd();
        child.WaitForExit(60_000);
        foreach (var name in new[] { "ddpm", "ddim", "dpm-solver++", "euler-karras", "heun-karras", "euler-ancestral", "dpm-solver++-sde", "unipc", "--karras-sigmas" })
            StringAssert.Contains(output, name);
    }

    [TestMethod]
    public void KarrasSigmasOnDdim_FailsWithOneLineNamingTheSetting()
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { Persistence.SamplesApp.Path(), "generate", "--model", CliBadInputTests.BundledModel, "--count", "1", "--sampler", "ddim", "--karras-sigmas", "--out", Path.Combine(Path.GetTempPath(), "never.png") })
            psi.ArgumentList.Add(a);
        psi.Environment["NO_COLOR"] = "1";
        using var child = Process.Start(psi)!;
        var stderr = child.StandardError.ReadToEndAsync();
        string log = child.StandardOutput.ReadToEnd() + stderr.Result;
        Assert.IsTrue(child.WaitForExit(60_000));
        Assert.AreNotEqual(0, child.ExitCode, log);
        StringAssert.Contains(log, "UseKarrasSigmas");
        StringAssert.Contains(log, "UniPC");
    }
}
