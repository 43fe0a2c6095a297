using TorchSharp;

namespace Microsoft.ML.Diffusion.Tests.Packaging;

/// <summary>
/// The package's public surface is what a user needs: the catalog, the estimators and transformers, their options and
/// the enums and records they take, in the root namespace, plus the evaluation metrics. Networks, layers, loops and
/// schedulers are internal. The list is a baseline (PublicApi.txt): a change to the surface shows up here and is made on
/// purpose.
/// </summary>
[TestClass]
public sealed class PublicApiTests
{
    private static readonly string[] AllowedNamespaces = { "Microsoft.ML.Diffusion", "Microsoft.ML.Diffusion.Evaluation" };

    private static List<string> Exported() =>
        typeof(DiffusionModel).Assembly.GetExportedTypes()
            .Where(t => !t.FullName!.Contains('<'))   // the compiler's containers of C# 14 extension blocks
            .Select(t => t.FullName!).OrderBy(n => n, StringComparer.Ordinal).ToList();

    [TestMethod]
    public void ExportedTypes_MatchTheBaseline()
    {
        var baseline = File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "Packaging", "PublicApi.txt"))
            .Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
        var exported = Exported();
        var added = exported.Except(baseline).ToList();
        var removed = baseline.Except(exported).ToList();
        Assert.IsTrue(added.Count == 0 && removed.Count == 0,
            $"Public surface changed. Added: [{string.Join(", ", added)}]; removed: [{string.Join(", ", removed)}]. " +
            "If intended, update test/Microsoft.ML.Diffusion.Tests/Packaging/PublicApi.txt.");
    }

    [TestMethod]
    public void PublicTypes_LiveInTheRootOrEvaluationNamespace_AndNoNetworkIsPublicButTheEvaluationClassifier()
    {
        var types = typeof(DiffusionModel).Assembly.GetExportedTypes().Where(t => !t.FullName!.Contains('<')).ToList();
        var stray = types.Where(t => !AllowedNamespaces.Contains(t.Namespace)).Select(t => t.FullName).ToList();
        Assert.AreEqual(0, stray.Count, $"Public types outside {string.Join(" and ", AllowedNamespaces)}: {string.Join(", ", stray)}");
        var modules = types.Where(t => typeof(torch.nn.Module).IsAssignableFrom(t)).Select(t => t.FullName).ToList();
        CollectionAssert.AreEqual(new[] { "Microsoft.ML.Diffusion.Evaluation.FeatureClassifier" }, modules,
            $"Public TorchSharp modules: {string.Join(", ", modules)}");
        // The user-facing enums and records that once sat in sub-namespaces (InpaintMaskKind was the README's stumbling block).
        foreach (var name in new[] { "InpaintMaskKind", "InpaintMasks", "TrainingProgress", "SamplingProgress", "UNetConfig", "DiffusionModelConfig", "NonFiniteLossException" })
            Assert.IsNotNull(typeof(DiffusionModel).Assembly.GetType($"Microsoft.ML.Diffusion.{name}"), $"Microsoft.ML.Diffusion.{name}");
    }
}
