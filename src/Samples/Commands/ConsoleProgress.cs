using Spectre.Console;

namespace Microsoft.ML.Diffusion.Samples.Commands;

/// <summary>Calls a handler synchronously on the reporting thread (unlike Progress&lt;T&gt;, which posts to the thread pool).</summary>
public sealed class SyncProgress<T> : IProgress<T>
{
    private readonly Action<T> _handler;

    public SyncProgress(Action<T> handler) => _handler = handler;

    public void Report(T value) => _handler(value);
}

/// <summary>Spectre.Console progress bars with the columns these commands use.</summary>
public static class ConsoleProgress
{
    public static T Run<T>(Func<ProgressContext, T> work) =>
        AnsiConsole.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
                     new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(work);

    /// <summary>Ctrl+C cancels the token (and the work stops cleanly) instead of killing the process.</summary>
    public static CancellationTokenSource CancelOnCtrlC()
    {
        var cts = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            cts.Cancel();
        };
        return cts;
    }
}
