using Microsoft.ML.Diffusion.Samples.Cli;

namespace Microsoft.ML.Diffusion.Samples.Metrics;

/// <summary>
/// The metrics CSV of a training run (<see cref="MetricsRow"/>), appended to as training goes. A run that resumes from a
/// checkpoint continues the file: before the first row of this run, rows from the steps this run redoes (those at or past its
/// first step, written after the checkpoint by a run that was then stopped) are dropped, so each step appears once. A run
/// without a checkpoint starts at step 1 and so starts the file over.
/// </summary>
public sealed class MetricsLog : IDisposable
{
    private readonly string _option;
    private List<MetricsRow>? _previous;   // the rows already in the file, until this run's first row
    private StreamWriter? _writer;

    private MetricsLog(string path, string option, List<MetricsRow> previous)
    {
        Path = path;
        _option = option;
        _previous = previous;
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>
    /// Checks <paramref name="path"/> before training starts: an existing file must be a metrics CSV (its rows are kept until
    /// the run's first step), and the folder must be writable. Failures are <see cref="CliException"/>s naming
    /// <paramref name="option"/> and the file.
    /// </summary>
    public static MetricsLog Open(string path, string option)
    {
        const string What = "a metrics CSV written by train, or a new file";
        if (Directory.Exists(path)) throw new CliException($"{option} '{path}' is a folder; expected {What}.");
        var previous = new List<MetricsRow>();
        if (File.Exists(path) && new FileInfo(path).Length > 0)
        {
            try
            {
                previous = MetricsRow.ReadAll(path);
            }
            catch (FormatException e)
            {
                throw new CliException($"{option} '{path}' is not a metrics file ({e.Message}); expected {What}. Delete it or give another path.", e);
            }
        }
        var log = new MetricsLog(path, option, previous);
        log.Try(() =>
        {
            string? dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path));
            if (dir != null) Directory.CreateDirectory(dir);
            // Opened for appending only to check that it can be written; nothing is changed until the first row.
            bool existed = File.Exists(path);
            using (new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)) { }
            if (!existed) File.Delete(path);
        });
        return log;
    }

    /// <summary>Appends a row; the first row of the run first drops the rows it redoes (see the class remarks).</summary>
    public void Append(MetricsRow row)
    {
        if (_writer is null) Begin(row);
        Try(() => _writer!.WriteLine(row.ToCsv()));
    }

    /// <summary>Rewrites the file with the rows that precede <paramref name="first"/>, then opens it for appending.</summary>
    private void Begin(MetricsRow first)
    {
        // A step row at step s: this run redoes steps s, s+1, ...; so do the evaluations from step s on. An evaluation row first
        // (an epoch whose steps all ran before the checkpoint): its steps stay, a previous evaluation of the same step goes.
        bool Keep(MetricsRow r) => first.Kind == MetricsRow.StepKind
            ? r.Step < first.Step
            : r.Kind == MetricsRow.StepKind ? r.Step <= first.Step : r.Step < first.Step;
        var kept = _previous!.Where(Keep).ToList();
        Try(() =>
        {
            if (kept.Count != _previous!.Count || !File.Exists(Path) || new FileInfo(Path).Length == 0)
            {
                string tmp = Path + ".tmp";
                File.WriteAllLines(tmp, kept.Select(r => r.ToCsv()).Prepend(MetricsRow.Header));
                File.Move(tmp, Path, overwrite: true);
            }
            _writer = new StreamWriter(new FileStream(Path, FileMode.Append, FileAccess.Write, FileShare.Read)) { AutoFlush = true };
        });
        _previous = null;
    }

    private void Try(Action write)
    {
        try
        {
            write();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
        {
            throw new CliException($"{_option} '{Path}' cannot be written ({CliErrors.OneLine(e.Message).TrimEnd('.')}); expected a writable file path.", e);
        }
    }

    /// <summary>Closes the file.</summary>
    public void Dispose() => _writer?.Dispose();
}
