using System.Runtime.CompilerServices;

// Persistence uses ML.NET APIs that are internal in Microsoft.ML 5.0.1 (ModelSaveContext, ModelLoadContext,
// LoadableClassAttribute, VersionInfo). The library compiles against publicized copies (build/Publicize.targets);
// at run time CoreCLR honours these attributes and skips the access checks for those two assemblies.
[assembly: IgnoresAccessChecksTo("Microsoft.ML.Core")]
[assembly: IgnoresAccessChecksTo("Microsoft.ML.Data")]

namespace System.Runtime.CompilerServices
{
    /// <summary>Read by the runtime: lets this assembly use non-public members of the named assembly.</summary>
    [AttributeUsage(AttributeTargets.Assembly, AllowMultiple = true)]
    internal sealed class IgnoresAccessChecksToAttribute : Attribute
    {
        public IgnoresAccessChecksToAttribute(string assemblyName) => AssemblyName = assemblyName;

        public string AssemblyName { get; }
    }
}
