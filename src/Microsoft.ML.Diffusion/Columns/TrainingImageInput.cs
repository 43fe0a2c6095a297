using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Diffusion.Columns;

/// <summary>
/// The training image column of <see cref="DiffusionTrainer"/>: either MLImage values (ImageDataViewType) or float pixel
/// vectors in the layout ML.NET's ExtractPixels writes with its defaults: planar (all R, then all G, then all B), values
/// 0..255, type <c>Vector&lt;Single, 3, H, W&gt;</c> (3 planes even for grayscale images). One plane
/// (<c>Vector&lt;Single, 1, H, W&gt;</c>, e.g. ExtractPixels with <c>colorsToExtract: ColorBits.Red</c>) is accepted for
/// Channels = 1. For Channels = 1, color images (an MLImage whose channels differ, or three planes that differ) are an error
/// naming the column and row unless the trainer's ConvertToGrayscale option is set; then they train on their ITU-R BT.601 luma,
/// the same for both kinds of column, so both give the same weights.
/// </summary>
internal sealed class TrainingImageInput
{
    private readonly int _size;
    private readonly int _channels;

    private TrainingImageInput(DataViewSchema.Column column, int planes, int size, int channels)
    {
        Column = column;
        Planes = planes;
        _size = size;
        _channels = channels;
    }

    /// <summary>The full name of the option that accepts color images for a grayscale model (null: they are converted to luma
    /// silently); set with <see cref="RejectColor"/>.</summary>
    private string? _grayscaleOption;

    /// <summary>For Channels = 1 and unless <paramref name="convertToGrayscale"/>: the reader throws for color images, naming
    /// <paramref name="option"/> (the opt-in). Returns this.</summary>
    public TrainingImageInput RejectColor(bool convertToGrayscale, string option)
    {
        _grayscaleOption = convertToGrayscale || _channels != 1 ? null : option;
        return this;
    }

    /// <summary>The input column.</summary>
    public DataViewSchema.Column Column { get; }

    /// <summary>0 for an MLImage column; otherwise the number of pixel planes of the vector (1 or 3).</summary>
    public int Planes { get; }

    private static string Expected(int size, int channels) =>
        $"expected an image (ImageDataViewType {size}x{size}) or a vector of Single pixel values 0..255 in ExtractPixels' planar layout " +
        (channels == 1 ? $"(Vector<Single, 3, {size}, {size}> or Vector<Single, 1, {size}, {size}>)" : $"(Vector<Single, 3, {size}, {size}>)");

    /// <summary>Finds the column and checks its type, size and plane count; errors name the column, what was found and what was expected.</summary>
    public static TrainingImageInput Check(DataViewSchema schema, string name, int size, int channels)
    {
        var col = schema.GetColumnOrNull(name);
        if (col is null || col.Value.Type is ImageDataViewType)
            return new TrainingImageInput(ImageColumn.Check(schema, name, size), 0, size, channels);
        var c = col.Value;
        if (c.Type is not VectorDataViewType vector || vector.ItemType != NumberDataViewType.Single)
            throw new ArgumentOutOfRangeException(nameof(schema),
                $"Column '{name}' has type {c.Type}; {Expected(size, channels)}. " +
                "Load images with mlContext.Transforms.LoadImages (then ResizeImages and, for pixel vectors, ExtractPixels).");
        if (!vector.IsKnownSize)
            throw new ArgumentOutOfRangeException(nameof(schema),
                $"Column '{name}' is a vector of unknown size ({c.Type}); {Expected(size, channels)}. " +
                $"Add mlContext.Transforms.ResizeImages(imageWidth: {size}, imageHeight: {size}) before ExtractPixels.");
        int plane = size * size;
        var dims = vector.Dimensions;
        bool square = dims.Length == 1 || (dims.Length == 3 && dims[1] == size && dims[2] == size);
        if (!square || vector.Size % plane != 0)
            throw new ArgumentOutOfRangeException(nameof(schema),
                $"Column '{name}' holds {c.Type} ({vector.Size} values); {Expected(size, channels)}, that is " +
                $"{(channels == 1 ? $"{plane} or " : "")}{3 * plane} values for ImageSize = {size}. " +
                "Resize the images to the model's ImageSize (ResizeImages) or set ImageSize to their size.");
        int planes = vector.Size / plane;
        if (planes != 3 && !(planes == 1 && channels == 1))
            throw new ArgumentOutOfRangeException(nameof(schema),
                $"Column '{name}' holds {planes} plane{(planes == 1 ? "" : "s")} of {size}x{size} pixels ({c.Type}); Channels = {channels} " +
                $"expects {(channels == 1 ? "1 plane or 3 planes (R, G, B)" : "3 planes (R, G, B)")}, as ExtractPixels writes with its default colorsToExtract " +
                $"(Rgb, no alpha){(planes == 1 ? "; or set Channels = 1" : "")}.");
        return new TrainingImageInput(c, planes, size, channels);
    }

    /// <summary>The same checks on a <see cref="SchemaShape"/> (estimators), as far as a shape tells: a vector's size is not known there.</summary>
    public static void Check(SchemaShape shape, string name, int size, int channels)
    {
        if (shape.TryFindColumn(name, out var col) && col.ItemType == NumberDataViewType.Single
            && col.Kind == SchemaShape.Column.VectorKind.Vector)
            return;
        if (shape.TryFindColumn(name, out col) && col.ItemType is not ImageDataViewType)
            throw new ArgumentOutOfRangeException(nameof(shape),
                $"Column '{name}' has type {col.ItemType}{(col.Kind == SchemaShape.Column.VectorKind.Scalar ? "" : " vector")}" +
                $"{(col.Kind == SchemaShape.Column.VectorKind.VariableVector ? " of unknown size" : "")}; {Expected(size, channels)}.");
        ImageColumn.Check(shape, name, size);
    }

    /// <summary>
    /// A reader of this column on <paramref name="cursor"/>: writes row <c>row</c> as Channels planes of [-1, 1] floats into its
    /// destination. Throws for a missing or wrongly sized image, and for a NaN, infinite or out-of-range pixel value (naming the
    /// column, row, position and value).
    /// </summary>
    public Action<long, float[]> CreateReader(DataViewRowCursor cursor)
    {
        string name = Column.Name;
        if (Planes == 0)
        {
            var getImage = cursor.GetGetter<MLImage>(Column);
            MLImage image = null!;
            return (row, destination) =>
            {
                getImage(ref image);
                ImageColumn.CheckImage(image, name, row, _size);
                if (_grayscaleOption is string option) GrayscaleInput.CheckImage(image, name, row, option);
                ImageTensorConverter.ToChw(image, _channels, destination);
            };
        }
        var getPixels = cursor.GetGetter<VBuffer<float>>(Column);
        VBuffer<float> buffer = default;
        int expected = Planes * _size * _size;
        var dense = new float[expected];
        return (row, destination) =>
        {
            getPixels(ref buffer);
            if (buffer.Length != expected)
                throw new InvalidOperationException(
                    $"Column '{name}', row {row}: the vector has {buffer.Length} values; expected {expected} ({Planes}x{_size}x{_size}).");
            buffer.CopyTo(dense);   // sparse vectors are densified (absent values are 0)
            ImageTensorConverter.PlanarPixelsToChw(dense, Planes, _size, _channels, destination, name, row);   // range errors first
            if (Planes == 3 && _grayscaleOption is string option) GrayscaleInput.CheckPlanes(dense, _size, name, row, option);
        };
    }
}
