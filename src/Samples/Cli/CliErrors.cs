using System.CommandLine;
using System.Reflection;

namespace Microsoft.ML.Diffusion.Samples.Cli;

/// <summary>
/// The samples app's error contract: any failure of a command prints one line <c>error: &lt;message&gt;</c> on stderr and
/// exits with code 1; with <c>--verbose</c> the full exception (stack trace included) follows.
/// </summary>
public static class CliErrors
{
    /// <summary>The exit code of every bad argument, bad file or failed command.</summary>
    public const int ExitCode = 1;

    /// <summary>The global <c>--verbose</c> option (recursive: valid after any command).</summary>
    public static readonly Option<bool> Verbose = new("--verbose")
    {
        Description = "Show the full exception when a command fails (bench: also print each figure of each round)",
        Recursive = true,
    };

    /// <summary>Prints the parse errors of <paramref name="parse"/> on one line (joined by "; "); returns <see cref="ExitCode"/>.</summary>
    public static int ReportParseErrors(ParseResult parse, TextWriter error)
    {
        error.WriteLine("error: " + string.Join("; ", parse.Errors.Select(e => OneLine(e.Message).TrimEnd('.'))) + ".");
        return ExitCode;
    }

    /// <summary>Prints <paramref name="exception"/> as one line, and in full when <paramref name="verbose"/>; returns <see cref="ExitCode"/>.</summary>
    public static int Report(Exception exception, bool verbose, TextWriter error)
    {
        var cause = Unwrap(exception);
        error.WriteLine("error: " + OneLine(cause.Message));
        if (verbose) error.WriteLine(exception.ToString());
        return ExitCode;
    }

    /// <summary>The exception a reflection or task wrapper hides.</summary>
    public static Exception Unwrap(Exception exception)
    {
        while (true)
        {
            switch (exception)
            {
                case TargetInvocationException { InnerException: { } inner }:
                    exception = inner;
                    break;
                case AggregateException { InnerExceptions.Count: 1 } aggregate:
                    exception = aggregate.InnerExceptions[0];
                    break;
                default:
                    return exception;
            }
        }
    }

    /// <summary><paramref name="message"/> on one line: line breaks and tabs become single spaces.</summary>
    public static string OneLine(string message) =>
        string.Join(' ', message.Split(new[] { '\r', '\n', '\t' }, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
}
