namespace Microsoft.ML.Diffusion;

/// <summary>The built-in inpainting masks: the set RePaint (Lugmayr et al. 2022, section 5) evaluates on.</summary>
public enum InpaintMaskKind
{
    /// <summary>Thin random brush strokes (about 1/28 of the side wide) filling 15-30% of the image ("Narrow").</summary>
    Thin,

    /// <summary>Thick random brush strokes and a box, filling 30-50% of the image ("Wide").</summary>
    Wide,

    /// <summary>The bottom half is filled, the top half kept ("Half").</summary>
    Half,

    /// <summary>Outpainting: the centre square of half the side is kept, the border around it filled ("Expand").</summary>
    Outer,

    /// <summary>Every second row (the odd rows) is filled ("Alt. Lines").</summary>
    AlternatingLines,

    /// <summary>Only the pixels with even row and column are kept: 2x super-resolution ("Super-Resolve 2x").</summary>
    EverySecondPixel,
}
