using System.Text.Json.Serialization;

namespace Microsoft.ML.Diffusion.Benchmarks.Census;

/// <summary>The kind of layer a census case exercises.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<LayerKind>))]
public enum LayerKind
{
    /// <summary>nn.Conv2d (oneDNN).</summary>
    Conv,
    /// <summary>The library's <c>PaddedConv2d</c> (a convolution with fewer than 32 channels on one side).</summary>
    PaddedConv,
    /// <summary>The U-Net's nearest 2x upsampling + 3x3 convolution, run as one 2x2 convolution with 4x the output channels.</summary>
    UpsampleConv,
    /// <summary>nn.Linear.</summary>
    Linear,
    /// <summary>nn.GroupNorm.</summary>
    GroupNorm,
}

/// <summary>
/// One layer configuration and input shape that a library network runs: the unit of the fault census.
/// </summary>
/// <param name="Kind">The layer.</param>
/// <param name="In">Input channels (features for Linear).</param>
/// <param name="Out">Output channels (features for Linear; channels for GroupNorm).</param>
/// <param name="Kernel">Kernel side (0 for Linear and GroupNorm).</param>
/// <param name="Stride">Stride (1 for Linear and GroupNorm).</param>
/// <param name="Groups">GroupNorm groups (0 otherwise).</param>
/// <param name="Input">The input's shape, batch first.</param>
/// <param name="Networks">The networks (census scenarios) that run this layer.</param>
public sealed record LayerShape(LayerKind Kind, int In, int Out, int Kernel, int Stride, int Groups, long[] Input, List<string> Networks)
{
    /// <summary>A key that identifies the configuration and input shape.</summary>
    public string Key => $"{Kind} {In}->{Out} k{Kernel} s{Stride} g{Groups} [{string.Join("x", Input)}]";

    /// <summary>A short label for tables.</summary>
    public string Label => Kind switch
    {
        LayerKind.Linear => $"Linear {In}->{Out} [{string.Join("x", Input)}]",
        LayerKind.GroupNorm => $"GroupNorm {Groups}x{Out / Math.Max(1, Groups)} [{string.Join("x", Input)}]",
        LayerKind.UpsampleConv => $"Upsample conv {In}->{Out} (2x2, 4x{Out}) [{string.Join("x", Input)}]",
        LayerKind.PaddedConv => $"PaddedConv {In}->{Out} {Kernel}x{Kernel}/{Stride} [{string.Join("x", Input)}]",
        _ => $"Conv {In}->{Out} {Kernel}x{Kernel}/{Stride} [{string.Join("x", Input)}]",
    };
}
