using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Benchmarks.Census;

/// <summary>
/// <c>census scalar-race [--calls N] [--explicit]</c>: whether a TorchSharp <see cref="Scalar"/> temporary can be freed by
/// its finalizer while libtorch still reads it. The main thread calls <c>x.add_(other, alpha)</c> on a large tensor with
/// an implicitly converted alpha (a temporary, unreachable once its handle is read), while a second thread allocates and
/// forces garbage collections and finalizers. Every result is checked against the exact expected value. With
/// <c>--explicit</c> the alpha is a Scalar held by <c>using</c> (what ScalarSafeOptimizers does) as the control.
/// </summary>
internal static class ScalarRace
{
    public static int Run(string[] args)
    {
        long calls = 20_000;
        bool held = args.Contains("--explicit");
        for (int i = 0; i < args.Length - 1; i++) if (args[i] == "--calls") calls = long.Parse(args[i + 1]);
        torch.set_num_threads(1);
        using var x = zeros(1 << 18, dtype: float32);
        using var one = ones(1 << 18, dtype: float32);
        long wrong = 0, errors = 0;
        var firstError = "";
        using var stop = new CancellationTokenSource();
        var collector = new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                _ = new byte[64 * 1024];
                GC.Collect();
                GC.WaitForPendingFinalizers();
            }
        }) { IsBackground = true };
        collector.Start();
        var watch = Stopwatch.StartNew();
        for (long c = 0; c < calls; c++)
        {
            // alpha = 0.25 exactly; after k calls every element equals k / 4 (exact in float32 for k < 2^24).
            try
            {
                if (held)
                {
                    using var alpha = 0.25.ToScalar();
                    x.add_(one, alpha: alpha);
                }
                else
                {
                    x.add_(one, alpha: 0.25);
                }
            }
            catch (Exception e)
            {
                errors++;
                if (firstError.Length == 0) firstError = e.Message.Split('\n')[0];
                x.fill_((c + 1) * 0.25);   // the value the call should have left
                continue;
            }
            if (c % 64 == 63)
            {
                float expected = (c + 1) * 0.25f, lo = x.min().item<float>(), hi = x.max().item<float>();
                if (lo != expected || hi != expected) { wrong++; x.fill_(expected); }
            }
        }
        stop.Cancel();
        collector.Join();
        Console.WriteLine($"scalar-race: {(held ? "held" : "implicit")} alpha, {calls:N0} calls in {watch.Elapsed.TotalSeconds:F1} s: " +
                          $"{errors} errors, {wrong} wrong checks (of {calls / 64:N0}){(firstError.Length > 0 ? $"; first error: {firstError}" : "")}");
        return errors + wrong > 0 ? 1 : 0;
    }
}
