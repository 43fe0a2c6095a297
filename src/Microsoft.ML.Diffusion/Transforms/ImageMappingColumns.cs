using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Imaging;
using Microsoft.ML.Transforms.Image;
using Microsoft.ML.Diffusion.Columns;

namespace Microsoft.ML.Diffusion.Transforms;

/// <summary>Schema checks and row readers of the image and mask columns of <see cref="InpaintingTransformer"/> and
/// <see cref="UpscalingTransformer"/>; errors name the column, the size or type found and the one expected.</summary>
internal static class ImageMappingColumns
{
    /// <summary>Checks that <paramref name="name"/> holds images of side <paramref name="size"/> (or of unknown size).</summary>
    public static DataViewSchema.Column CheckImage(DataViewSchema schema, string name, int size, string why)
    {
        var col = Find(schema, name, $"an image column ({size}x{size})");
        if (col.Type is not ImageDataViewType img)
            throw new ArgumentOutOfRangeException(nameof(schema),
                $"Column '{name}' has type {col.Type}; expected an image ({size}x{size}, {why}). Load images with mlContext.Transforms.LoadImages.");
        if ((img.Height != 0 || img.Width != 0) && (img.Height != size || img.Width != size))
            throw new ArgumentOutOfRangeException(nameof(schema), WrongSize(name, null, img.Width, img.Height, size, why));
        return col;
    }

    /// <summary>The same check on a <see cref="SchemaShape"/> (estimators).</summary>
    public static void CheckImage(SchemaShape shape, string name, int size, string why)
    {
        if (!shape.TryFindColumn(name, out var col))
            throw new ArgumentOutOfRangeException(nameof(shape), $"Column '{name}' was not found in the input; expected an image column ({size}x{size}, {why}).");
        if (col.Kind != SchemaShape.Column.VectorKind.Scalar || col.ItemType is not ImageDataViewType img)
            throw new ArgumentOutOfRangeException(nameof(shape),
                $"Column '{name}' has type {col.ItemType}{(col.Kind == SchemaShape.Column.VectorKind.Scalar ? "" : " vector")}; expected an image ({size}x{size}, {why}).");
        if ((img.Height != 0 || img.Width != 0) && (img.Height != size || img.Width != size))
            throw new ArgumentOutOfRangeException(nameof(shape), WrongSize(name, null, img.Width, img.Height, size, why));
    }

    /// <summary>Checks a mask column: an image of side <paramref name="size"/>, or a Boolean or Single vector of size x size values.</summary>
    public static DataViewSchema.Column CheckMask(DataViewSchema schema, string name, int size)
    {
        var col = Find(schema, name, $"a mask ({size}x{size} image, or Boolean/Single vector of {size * size})");
        switch (col.Type)
        {
            case ImageDataViewType img:
                if ((img.Height != 0 || img.Width != 0) && (img.Height != size || img.Width != size))
                    throw new ArgumentOutOfRangeException(nameof(schema), WrongSize(name, null, img.Width, img.Height, size, "the mask must match the image"));
                return col;
            case VectorDataViewType vec when vec.ItemType == BooleanDataViewType.Instance || vec.ItemType == NumberDataViewType.Single:
                if (vec.Size != 0 && vec.Size != size * size)
                    throw new ArgumentOutOfRangeException(nameof(schema),
                        $"Column '{name}' holds mask vectors of {vec.Size} values; expected {size * size} ({size}x{size}, one per pixel, row-major).");
                return col;
            default:
                throw new ArgumentOutOfRangeException(nameof(schema),
                    $"Column '{name}' has type {col.Type}; expected a mask: a {size}x{size} image (white keeps, black fills) or a Boolean/Single " +
                    $"vector of {size * size} values (true/1 keeps, false/0 fills).");
        }
    }

    /// <summary>The same check on a <see cref="SchemaShape"/> (estimators).</summary>
    public static void CheckMask(SchemaShape shape, string name, int size)
    {
        if (!shape.TryFindColumn(name, out var col))
            throw new ArgumentOutOfRangeException(nameof(shape), $"Column '{name}' was not found in the input; expected a mask ({size}x{size} image, or Boolean/Single vector of {size * size}).");
        bool isImage = col.Kind == SchemaShape.Column.VectorKind.Scalar && col.ItemType is ImageDataViewType;
        bool isVector = col.Kind != SchemaShape.Column.VectorKind.Scalar &&
                        (col.ItemType == BooleanDataViewType.Instance || col.ItemType == NumberDataViewType.Single);
        if (col.ItemType is ImageDataViewType img && (img.Height != 0 || img.Width != 0) && (img.Height != size || img.Width != size))
            throw new ArgumentOutOfRangeException(nameof(shape), WrongSize(name, null, img.Width, img.Height, size, "the mask must match the image"));
        if (!isImage && !isVector)
            throw new ArgumentOutOfRangeException(nameof(shape),
                $"Column '{name}' has type {col.ItemType}; expected a mask: a {size}x{size} image or a Boolean/Single vector of {size * size} values.");
    }

    /// <summary>Reads the image of the current row as C x size x size floats in [-1, 1]. With <paramref name="grayscaleOption"/> set
    /// and one channel, a color image is an error that names that opt-in option (see <see cref="GrayscaleInput"/>); null converts
    /// color images to luma.</summary>
    public static Func<long, float[]> ImageReader(DataViewRow row, DataViewSchema.Column column, int size, int channels, string why,
        string? grayscaleOption = null)
    {
        var getter = row.GetGetter<MLImage>(column);
        return index =>
        {
            MLImage image = null!;
            getter(ref image);
            if (image is null)
                throw new InvalidOperationException($"Column '{column.Name}', row {index}: the image is missing (null); expected a {size}x{size} image.");
            if (image.Width != size || image.Height != size)
                throw new InvalidOperationException(WrongSize(column.Name, index, image.Width, image.Height, size, why));
            if (channels == 1 && grayscaleOption is not null) GrayscaleInput.CheckImage(image, column.Name, index, grayscaleOption);
            var values = new float[channels * size * size];
            ImageTensorConverter.ToChw(image, channels, values);
            return values;
        };
    }

    /// <summary>Reads the current row as an <see cref="ImageRequest"/> of its image alone (no mask).</summary>
    public static Func<long, ImageRequest> RequestReader(DataViewRow row, DataViewSchema.Column column, int size, int channels, string why,
        string? grayscaleOption = null)
    {
        var image = ImageReader(row, column, size, channels, why, grayscaleOption);
        return index => new ImageRequest(index, image(index), null);
    }

    /// <summary>Reads the mask of the current row as size x size floats, 1 keeping and 0 filling the pixel.</summary>
    public static Func<long, float[]> MaskReader(DataViewRow row, DataViewSchema.Column column, int size)
    {
        int n = size * size;
        switch (column.Type)
        {
            case ImageDataViewType:
            {
                var getter = row.GetGetter<MLImage>(column);
                return index =>
                {
                    MLImage image = null!;
                    getter(ref image);
                    if (image is null)
                        throw new InvalidOperationException($"Column '{column.Name}', row {index}: the mask image is missing (null); expected a {size}x{size} image.");
                    if (image.Width != size || image.Height != size)
                        throw new InvalidOperationException(WrongSize(column.Name, index, image.Width, image.Height, size, "the mask must match the image"));
                    var luma = new float[n];
                    ImageTensorConverter.ToChw(image, 1, luma);
                    for (int i = 0; i < n; i++) luma[i] = luma[i] >= 0f ? 1f : 0f;   // white (>= 128 of 255) keeps
                    return luma;
                };
            }

            case VectorDataViewType vec when vec.ItemType == BooleanDataViewType.Instance:
            {
                var getter = row.GetGetter<VBuffer<bool>>(column);
                var buffer = default(VBuffer<bool>);
                return index =>
                {
                    getter(ref buffer);
                    CheckLength(column.Name, index, buffer.Length, size);
                    var mask = new float[n];
                    int i = 0;
                    foreach (var v in buffer.DenseValues()) mask[i++] = v ? 1f : 0f;
                    return mask;
                };
            }

            default:
            {
                var getter = row.GetGetter<VBuffer<float>>(column);
                var buffer = default(VBuffer<float>);
                return index =>
                {
                    getter(ref buffer);
                    CheckLength(column.Name, index, buffer.Length, size);
                    var mask = new float[n];
                    int i = 0;
                    foreach (var v in buffer.DenseValues()) mask[i++] = v >= 0.5f ? 1f : 0f;
                    return mask;
                };
            }
        }
    }

    private static void CheckLength(string name, long row, int length, int size)
    {
        if (length != size * size)
            throw new InvalidOperationException(
                $"Column '{name}', row {row}: the mask has {length} values; expected {size * size} ({size}x{size}, one per pixel, row-major).");
    }

    private static DataViewSchema.Column Find(DataViewSchema schema, string name, string expected) =>
        schema.GetColumnOrNull(name) ?? throw new ArgumentOutOfRangeException(nameof(schema),
            $"Column '{name}' was not found in the input; expected {expected}. " +
            $"Available columns: {string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => $"'{c.Name}'"))}.");

    private static string WrongSize(string name, long? row, int width, int height, int size, string why) =>
        $"Column '{name}'{(row is long r ? $", row {r}," : "")} holds {width}x{height} images; expected {size}x{size} ({why}). " +
        $"Add mlContext.Transforms.ResizeImages(\"{name}\", imageWidth: {size}, imageHeight: {size}) first.";
}
