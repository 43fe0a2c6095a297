namespace Microsoft.ML.Diffusion.Samples.Cli;

/// <summary>
/// A bad argument or input file. The samples app prints its message as one line (<c>error: ...</c>) on stderr and exits with
/// code 1; the message names the option or file and what was expected.
/// </summary>
public sealed class CliException : Exception
{
    /// <summary>A bad input described by <paramref name="message"/>.</summary>
    /// <param name="message">One line naming the option or file and what was expected.</param>
    /// <param name="inner">The failure that revealed it, shown with <c>--verbose</c>.</param>
    public CliException(string message, Exception? inner = null) : base(message, inner)
    {
    }
}
