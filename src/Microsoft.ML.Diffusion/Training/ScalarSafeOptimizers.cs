using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Training;

/// <summary>
/// TorchSharp's Adam and AdamW with the same update, state and checkpoint format, but with every <see cref="Scalar"/> the
/// step passes to libtorch held alive until libtorch returns.
/// </summary>
/// <remarks>
/// TorchSharp's own optimizers pass .NET numbers as implicitly converted <see cref="Scalar"/> temporaries
/// (<c>exp_avg.mul_(beta1)</c>, <c>denom.add_(eps)</c>). A temporary is unreachable once its native handle has been read,
/// and <see cref="Scalar"/> has a finalizer that frees the native value, so a garbage collection started by another thread
/// during the native call can free the value while libtorch reads it. libtorch then reads freed memory: a "Expected false
/// to be true" error from <c>c10::Scalar::toFloat</c>, a wrong coefficient, or a crash, once in millions of calls (seen
/// in a 2,000-step training run on this machine; docs/engineering/fault-census.md). Here each Scalar is a local disposed
/// by <c>using</c> after its last call, which keeps it reachable. The arithmetic is TorchSharp's, call for call, so results
/// are bit-identical to <see cref="optim.AdamW(IEnumerable{Parameter}, double, double, double, double, double, bool, bool)"/>
/// and <see cref="optim.Adam(IEnumerable{Parameter}, double, double, double, double, double, bool, bool)"/>, and
/// checkpoints written by either load into the other.
/// </remarks>
internal static class ScalarSafeOptimizers
{
    /// <summary>AdamW (Loshchilov &amp; Hutter 2019, algorithm 2), as TorchSharp's <c>optim.AdamW</c> without amsgrad or maximize.</summary>
    public static TorchSharp.Modules.AdamW AdamW(IEnumerable<Parameter> parameters, double lr, double weightDecay) => new Safe.AdamW(parameters, lr, weightDecay);

    /// <summary>Adam (Kingma &amp; Ba 2015, algorithm 1), as TorchSharp's <c>optim.Adam</c> without amsgrad or maximize.</summary>
    public static TorchSharp.Modules.Adam Adam(IEnumerable<Parameter> parameters, double lr) => new Safe.Adam(parameters, lr);

    /// <summary>m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    /// (Adam, algorithm 1, with the bias corrections folded as TorchSharp and PyTorch fold them).</summary>
    internal static void Update(Tensor param, Tensor grad, Tensor expAvg, Tensor expAvgSq, long step, double lr, double beta1, double beta2,
        Scalar b1, Scalar oneMinusB1, Scalar b2, Scalar oneMinusB2, Scalar epsilon, Scalar one)
    {
        double biasCorrection1 = 1 - Math.Pow(beta1, step);
        double biasCorrection2 = 1 - Math.Pow(beta2, step);
        expAvg.mul_(b1).add_(grad, alpha: oneMinusB1);
        expAvgSq.mul_(b2).addcmul_(grad, grad, value: oneMinusB2);
        using var sqrtCorrection = Math.Sqrt(biasCorrection2).ToScalar();
        using var root = expAvgSq.sqrt();
        using var denom = root.div(sqrtCorrection).add_(epsilon, one);
        using var stepSize = (-(lr / biasCorrection1)).ToScalar();
        param.addcdiv_(expAvg, denom, value: stepSize);
    }

    internal static void Check(double lr, double weightDecay)
    {
        if (!(lr >= 0)) throw new ArgumentOutOfRangeException(nameof(lr), lr, "The learning rate must be 0 or more.");
        if (!(weightDecay >= 0)) throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, "The weight decay must be 0 or more.");
    }
}

/// <summary>The optimizer classes of <see cref="ScalarSafeOptimizers"/>. They keep TorchSharp's class names, which TorchSharp writes
/// into and checks in a saved optimizer state.</summary>
internal static class Safe
{
    internal sealed class AdamW : TorchSharp.Modules.AdamW
    {
        public AdamW(IEnumerable<Parameter> parameters, double lr, double weightDecay) : base(parameters, lr, weight_decay: weightDecay) =>
            ScalarSafeOptimizers.Check(lr, weightDecay);

        public override Tensor step(Func<Tensor>? closure = null) => _step<ParamGroup>(group =>
        {
            var o = (Options)group.Options;
            double beta1 = o.beta1!.Value, beta2 = o.beta2!.Value, eps = o.eps!.Value, lr = o.LearningRate!.Value, wd = o.weight_decay!.Value;
            if (o.amsgrad == true || o.maximize == true) throw new NotSupportedException("amsgrad and maximize are not supported.");
            using Scalar decay = (1 - lr * wd).ToScalar(), b1 = beta1.ToScalar(), c1 = (1 - beta1).ToScalar(), b2 = beta2.ToScalar(),
                c2 = (1 - beta2).ToScalar(), epsilon = eps.ToScalar(), one = 1.ToScalar();
            foreach (var param in group.Parameters)
            {
                var state = (State)_state[param.Handle];
                var grad = param.grad;
                if (grad is null) continue;
                state.step += 1;
                param.mul_(decay);                       // decoupled weight decay: p <- p (1 - lr lambda)
                ScalarSafeOptimizers.Update(param, grad, state.exp_avg, state.exp_avg_sq, state.step, lr, beta1, beta2, b1, c1, b2, c2, epsilon, one);
            }
        }, closure);
    }

    internal sealed class Adam : TorchSharp.Modules.Adam
    {
        public Adam(IEnumerable<Parameter> parameters, double lr) : base(parameters, lr) => ScalarSafeOptimizers.Check(lr, 0);

        public override Tensor step(Func<Tensor>? closure = null) => _step<ParamGroup>(group =>
        {
            var o = (Options)group.Options;
            double beta1 = o.beta1!.Value, beta2 = o.beta2!.Value, eps = o.eps!.Value, lr = o.LearningRate!.Value;
            if (o.amsgrad == true || o.maximize == true || o.weight_decay != 0)
                throw new NotSupportedException("amsgrad, maximize and weight decay are not supported.");
            using Scalar b1 = beta1.ToScalar(), c1 = (1 - beta1).ToScalar(), b2 = beta2.ToScalar(), c2 = (1 - beta2).ToScalar(),
                epsilon = eps.ToScalar(), one = 1.ToScalar();
            foreach (var param in group.Parameters)
            {
                var state = (State)_state[param.Handle];
                var grad = param.grad;
                if (grad is null) continue;
                state.step += 1;
                ScalarSafeOptimizers.Update(param, grad, state.exp_avg, state.exp_avg_sq, state.step, lr, beta1, beta2, b1, c1, b2, c2, epsilon, one);
            }
        }, closure);
    }
}
