using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Models;

/// <summary>
/// A working copy of a float32 <see cref="UNet"/> in a lower-precision type (bfloat16) for mixed-precision forward and
/// backward passes: the float32 network stays the master copy; <see cref="Refresh"/> rounds its weights into the copy and
/// <see cref="AccumulateGradientsInto"/> hands the copy's gradients back to the master in float32.
/// </summary>
internal sealed class LowPrecisionCopy : IDisposable
{
    private readonly Parameter[] _master;
    private readonly Parameter[] _work;

    /// <summary>Creates the copy of <paramref name="master"/> (same device) in <paramref name="dtype"/> and fills it.</summary>
    public LowPrecisionCopy(UNet master, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(master);
        if (dtype is not (ScalarType.BFloat16 or ScalarType.Float16))
            throw new ArgumentException($"A working copy is bfloat16 or float16; got {dtype}.", nameof(dtype));
        DType = dtype;
        _master = master.parameters().ToArray();
        var device = _master.Length > 0 ? _master[0].device : CPU;
        // The copy is built with the master's architecture; its own random initialisation is overwritten by Refresh.
        // That initialisation draws from libtorch's global generator: save and restore it so that creating a copy does
        // not change what a float32 run in the same process draws afterwards (e.g. dropout masks).
        using (var state = torch.random.get_rng_state())
        {
            Network = new UNet(master.Config);
            torch.random.set_rng_state(state);
        }
        Network.to(dtype).to(device);
        _work = Network.parameters().ToArray();
        if (_work.Length != _master.Length)
            throw new InvalidOperationException("The working copy does not have the master network's parameters.");
        if (master.training) Network.train(); else Network.eval();
        Refresh();
    }

    /// <summary>The low-precision network.</summary>
    public UNet Network { get; }

    /// <summary>Its element type.</summary>
    public ScalarType DType { get; }

    /// <summary>Copies (rounds) the master weights into the working copy.</summary>
    public void Refresh()
    {
        using var noGrad = no_grad();
        for (int i = 0; i < _master.Length; i++)
            _work[i].copy_(_master[i]);
    }

    /// <summary>Zeroes the working copy's gradients (after a failed backward pass, before it is recomputed).</summary>
    public void ClearGradients()
    {
        using var noGrad = no_grad();
        foreach (var w in _work) w.grad?.zero_();
    }

    /// <summary>
    /// Sets each master parameter's gradient to the working copy's gradient converted to float32 (parameters without a
    /// gradient get none) and clears the copy's gradients.
    /// </summary>
    public void AccumulateGradientsInto()
    {
        using var noGrad = no_grad();
        for (int i = 0; i < _master.Length; i++)
        {
            var g = _work[i].grad;
            if (g is null)
            {
                _master[i].grad = null;
                continue;
            }
            if (_master[i].grad is Tensor mg) mg.copy_(g);
            else _master[i].grad = g.to(_master[i].dtype);
            g.zero_();
        }
    }

    /// <summary>Runs the working copy on <paramref name="x"/> (cast to its type) and returns the output in float32.</summary>
    public Tensor Forward(Tensor x, Tensor t) => Forward(x, t, null);

    /// <summary>As <see cref="Forward(Tensor, Tensor)"/>, with class labels for a class-conditional network (see <see cref="UNet.forward(Tensor, Tensor, Tensor?)"/>).</summary>
    public Tensor Forward(Tensor x, Tensor t, Tensor? classLabels)
    {
        using var scope = NewDisposeScope();
        return Network.forward(x.to(DType), t, classLabels).to(float32).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public void Dispose() => Network.Dispose();
}
