// Publicizer OUTPUT_DIR ASSEMBLY.dll [ASSEMBLY.dll ...]
//
// Microsoft.ML 5.0.1 keeps the APIs a custom transformer needs to save weights in a model zip internal
// (ModelSaveContext.SetVersionInfo, SaveBinaryStream, ModelLoadContext, LoadableClassAttribute, ...).
// The library compiles against copies of Microsoft.ML.Core/Data in which everything is public and declares
// [IgnoresAccessChecksTo] for them, so the runtime (CoreCLR) allows the calls against the real assemblies.
using Mono.Cecil;

if (args.Length < 2)
{
    Console.Error.WriteLine("usage: Publicizer OUTPUT_DIR ASSEMBLY.dll [ASSEMBLY.dll ...]");
    return 2;
}

string outputDir = args[0];
Directory.CreateDirectory(outputDir);
DateTime toolTime = File.GetLastWriteTimeUtc(typeof(Program).Assembly.Location);

foreach (string input in args.Skip(1))
{
    string output = Path.Combine(outputDir, Path.GetFileName(input));
    if (File.Exists(output)
        && File.GetLastWriteTimeUtc(output) >= File.GetLastWriteTimeUtc(input)
        && File.GetLastWriteTimeUtc(output) >= toolTime)
        continue; // up to date: keep the timestamp so the compiler stays incremental

    var resolver = new DefaultAssemblyResolver();
    resolver.AddSearchDirectory(Path.GetDirectoryName(input)!);
    using var assembly = AssemblyDefinition.ReadAssembly(input,
        new ReaderParameters { AssemblyResolver = resolver, ReadingMode = ReadingMode.Immediate });

    foreach (var module in assembly.Modules)
        foreach (var type in module.Types)
            Publicize(type);

    string tmp = output + ".tmp";
    assembly.Write(tmp);
    File.Move(tmp, output, overwrite: true);
    Console.WriteLine($"Publicizer: {Path.GetFileName(input)} -> {output}");
}
return 0;

static void Publicize(TypeDefinition type)
{
    if (type.IsNested)
        type.IsNestedPublic = true;
    else
        type.IsPublic = true;

    // A field that shares its name with an event is the event's compiler-generated backing field;
    // making it public would make the name ambiguous.
    var eventNames = new HashSet<string>(type.Events.Select(e => e.Name));
    foreach (var field in type.Fields)
    {
        if (eventNames.Contains(field.Name) || IsCompilerGenerated(field))
            continue;
        field.IsPublic = true;
    }
    foreach (var method in type.Methods)
    {
        if (IsCompilerGenerated(method))
            continue;
        method.IsPublic = true;
    }
    foreach (var nested in type.NestedTypes)
        Publicize(nested);
}

static bool IsCompilerGenerated(ICustomAttributeProvider member) =>
    member.CustomAttributes.Any(a => a.AttributeType.FullName == "System.Runtime.CompilerServices.CompilerGeneratedAttribute");
