using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Microsoft.ML.Diffusion.Columns;

/// <summary>Schema checks for image columns, with errors that name the column, what was found and what was expected.</summary>
internal static class ImageColumn
{
    /// <summary>Finds <paramref name="name"/> in <paramref name="schema"/> and checks it holds images of side <paramref name="size"/> (or of unknown size).</summary>
    public static DataViewSchema.Column Check(DataViewSchema schema, string name, int size)
    {
        var col = schema.GetColumnOrNull(name)
            ?? throw new ArgumentOutOfRangeException(nameof(schema),
                $"Column '{name}' was not found in the input; expected an image column (ImageDataViewType {size}x{size}). " +
                $"Available columns: {string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => $"'{c.Name}'"))}.");
        if (col.Type is not ImageDataViewType img)
            throw new ArgumentOutOfRangeException(nameof(schema),
                $"Column '{name}' has type {col.Type}; expected an image (ImageDataViewType {size}x{size}). " +
                "Load images with mlContext.Transforms.LoadImages or convert pixels with ConvertToImage.");
        if ((img.Height != 0 || img.Width != 0) && (img.Height != size || img.Width != size))
            throw new ArgumentOutOfRangeException(nameof(schema), WrongSize(name, img.Width, img.Height, size, null));
        return col;
    }

    /// <summary>The same check on a <see cref="SchemaShape"/> (estimators).</summary>
    public static void Check(SchemaShape shape, string name, int size)
    {
        if (!shape.TryFindColumn(name, out var col))
            throw new ArgumentOutOfRangeException(nameof(shape),
                $"Column '{name}' was not found in the input; expected an image column (ImageDataViewType {size}x{size}).");
        if (col.Kind != SchemaShape.Column.VectorKind.Scalar || col.ItemType is not ImageDataViewType img)
            throw new ArgumentOutOfRangeException(nameof(shape),
                $"Column '{name}' has type {col.ItemType}{(col.Kind == SchemaShape.Column.VectorKind.Scalar ? "" : " vector")}; " +
                $"expected an image (ImageDataViewType {size}x{size}). Load images with mlContext.Transforms.LoadImages.");
        if ((img.Height != 0 || img.Width != 0) && (img.Height != size || img.Width != size))
            throw new ArgumentOutOfRangeException(nameof(shape), WrongSize(name, img.Width, img.Height, size, null));
    }

    /// <summary>Checks one image read from column <paramref name="name"/> at <paramref name="row"/>.</summary>
    public static void CheckImage(MLImage? image, string name, long row, int size)
    {
        if (image is null)
            throw new InvalidOperationException($"Column '{name}', row {row}: the image is missing (null); expected a {size}x{size} image.");
        if (image.Width != size || image.Height != size)
            throw new InvalidOperationException(WrongSize(name, image.Width, image.Height, size, row));
    }

    private static string WrongSize(string name, int width, int height, int size, long? row) =>
        $"Column '{name}'{(row is long r ? $", row {r}," : "")} holds {width}x{height} images; expected {size}x{size}. " +
        $"Add mlContext.Transforms.ResizeImages(\"{name}\", imageWidth: {size}, imageHeight: {size}) before training, " +
        "or set ImageSize to the images' size.";
}
