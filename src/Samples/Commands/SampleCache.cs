using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Diffusion.Common;
using Microsoft.ML.Diffusion.Samples.Cli;
using Microsoft.ML.Diffusion.Transforms;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Samples.Commands;

/// <summary>
/// The generated images of an <c>evaluate</c> run kept on disk (<c>--resume-dir</c>), one file per batch, so that an evaluation
/// that outlives a sitting (DDPM with 1000 steps at n = 2000 takes hours on two cores) goes on where it stopped. The folder's
/// <c>settings.json</c> records what the images depend on (the model file's SHA-256, sampler, steps, precision, engine, first
/// seed, batch size); a later run with other settings is refused instead of mixing images. A larger <c>--count</c> reuses the
/// batches already there.
/// </summary>
internal sealed class SampleCache
{
    private const string SettingsFile = "settings.json";
    private readonly string _dir;

    private SampleCache(string dir) => _dir = dir;

    /// <summary>Opens <paramref name="dir"/> for images made with <paramref name="settings"/>: creates it (and its settings file)
    /// when new, or checks that the settings it holds are the same; a difference throws a <see cref="CliException"/> that names
    /// the setting.</summary>
    public static SampleCache Open(string dir, JsonObject settings)
    {
        string path = Path.Combine(dir, SettingsFile);
        try
        {
            Directory.CreateDirectory(dir);
            if (File.Exists(path))
            {
                var saved = JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                    ?? throw new CliException($"--resume-dir '{dir}': {SettingsFile} is not a JSON object; expected the settings an earlier evaluate wrote.");
                foreach (var (key, value) in settings)
                {
                    string want = value?.ToJsonString() ?? "null", have = saved[key]?.ToJsonString() ?? "(missing)";
                    if (want != have)
                    {
                        throw new CliException($"--resume-dir '{dir}' holds images made with {key} = {have}, not {want}; " +
                            "expected the same model and sampler settings (use another folder, or delete this one).");
                    }
                }
            }
            else
            {
                AtomicFile.Write(path, s => s.Write(System.Text.Encoding.UTF8.GetBytes(settings.ToJsonString(new JsonSerializerOptions { WriteIndented = true }))));
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
        {
            throw new CliException($"--resume-dir '{dir}' cannot be used (expected a writable folder): {CliErrors.OneLine(e.Message)}", e);
        }

        return new SampleCache(dir);
    }

    /// <summary>The settings the images of <c>evaluate</c> depend on.</summary>
    public static JsonObject Settings(string modelPath, string sampler, int steps, Precision precision, InferenceEngine engine, uint seed, int batchSize)
    {
        using var stream = File.OpenRead(modelPath);
        return new JsonObject
        {
            ["model_sha256"] = Convert.ToHexString(SHA256.HashData(stream)).ToLowerInvariant(),
            ["sampler"] = sampler,
            ["steps"] = steps,
            ["precision"] = precision.ToString(),
            ["engine"] = engine.ToString(),
            ["seed"] = seed,
            ["batch_size"] = batchSize,
        };
    }

    /// <summary>Generates the images of <paramref name="seeds"/> batch by batch under one progress bar, reading the batches
    /// already on disk and writing each new one (atomically) as soon as it is done.</summary>
    public Tensor Generate(DiffusionModel model, uint[] seeds, SamplerOptions options)
    {
        int batchSize = options.BatchSize, batches = (seeds.Length + batchSize - 1) / batchSize;
        int perBatch = options.ResolveSteps(model.Timesteps);
        var parts = new List<Tensor>();
        try
        {
            ConsoleProgress.Run(ctx =>
            {
                var task = ctx.AddTask($"Sampling {seeds.Length} images", maxValue: perBatch * batches);
                for (int b = 0; b < batches; b++)
                {
                    int first = b * batchSize, n = Math.Min(batchSize, seeds.Length - first);
                    string file = Path.Combine(_dir, $"images-{first:D6}-{n:D4}.bin");
                    Tensor? images = File.Exists(file) ? Read(file) : null;
                    if (images is null)
                    {
                        int batch = b;
                        options.Progress = new SyncProgress<SamplingProgress>(p =>
                        {
                            // A Heun step takes two network calls: the reports' total is the number of loop positions per batch.
                            if (p.TotalSteps != perBatch)
                            {
                                perBatch = p.TotalSteps;
                                task.MaxValue = perBatch * batches;
                            }

                            task.Value = batch * perBatch + p.Step;
                        });
                        images = model.GenerateTensor(seeds[first..(first + n)], options);
                        Write(file, images);
                    }

                    parts.Add(images);
                    task.Value = (b + 1) * perBatch;
                }

                return 0;
            });
            return cat(parts, 0);
        }
        finally
        {
            foreach (var part in parts) part.Dispose();
        }
    }

    // A batch file: int32 rank, the shape (int64 each), then the float32 values, little-endian.
    private static void Write(string path, Tensor images)
    {
        using var cpu = images.detach().cpu().to_type(ScalarType.Float32).contiguous();
        float[] values = cpu.data<float>().ToArray();
        AtomicFile.Write(path, stream =>
        {
            using var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true);
            writer.Write(cpu.shape.Length);
            foreach (long d in cpu.shape) writer.Write(d);
            foreach (float v in values) writer.Write(v);
        });
    }

    private static Tensor Read(string path)
    {
        try
        {
            return ReadBatch(path);
        }
        catch (Exception e) when (e is IOException or ArgumentException or OverflowException)
        {
            throw new CliException($"--resume-dir: the batch file '{path}' cannot be read (expected one written by evaluate; delete it to generate it again): {CliErrors.OneLine(e.Message)}", e);
        }
    }

    private static Tensor ReadBatch(string path)
    {
        using var reader = new BinaryReader(File.OpenRead(path));
        var shape = new long[reader.ReadInt32()];
        for (int i = 0; i < shape.Length; i++) shape[i] = reader.ReadInt64();
        var values = new float[shape.Aggregate(1L, (a, d) => a * d)];
        for (int i = 0; i < values.Length; i++) values[i] = reader.ReadSingle();
        return tensor(values, shape);
    }
}
