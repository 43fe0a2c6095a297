using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion;

/// <summary>One input row of an image-to-image transform: its index, its image as C x H x W floats in [-1, 1], and its
/// keep mask (H x W, 1 keeps, 0 fills) when the transform reads one.</summary>
internal sealed record ImageRequest(long Row, float[] Image, float[]? Mask)
{
    /// <summary>The images of <paramref name="requests"/> as one float tensor [N, <paramref name="channels"/>, size, size] on the CPU.</summary>
    public static Tensor Images(IReadOnlyList<ImageRequest> requests, int channels, int size)
    {
        int per = channels * size * size;
        var values = new float[requests.Count * per];
        for (int i = 0; i < requests.Count; i++) requests[i].Image.CopyTo(values, i * per);
        return tensor(values, new long[] { requests.Count, channels, size, size });
    }

    /// <summary>The keep masks of <paramref name="requests"/> (all present) as one float tensor [N, 1, size, size] on the CPU.</summary>
    public static Tensor Masks(IReadOnlyList<ImageRequest> requests, int size)
    {
        int per = size * size;
        var values = new float[requests.Count * per];
        for (int i = 0; i < requests.Count; i++) requests[i].Mask!.CopyTo(values, i * per);
        return tensor(values, new long[] { requests.Count, 1, size, size });
    }
}

/// <summary>
/// What <see cref="ImageMappingDataView{TRequest}"/> and <see cref="ImageMappingRowMapper{TRequest}"/> need from a transformer
/// that adds one image per row: which input columns it reads, how to read one row as a <typeparamref name="TRequest"/>, and
/// how to map a batch of requests to output images (Bgra32 pixels, <see cref="OutputSize"/> square). Image-to-image
/// transformers (<see cref="ImageToImageTransformer"/>, <see cref="AutoencoderModel"/>) read <see cref="ImageRequest"/>s;
/// generation (<see cref="GenerationMapper"/>) reads <see cref="GenerationRequest"/>s.
/// </summary>
/// <typeparam name="TRequest">What one input row holds for the mapping.</typeparam>
internal interface IImageBatchMapper<TRequest>
{
    /// <summary>The column the transform adds.</summary>
    string OutputColumnName { get; }

    /// <summary>Side of the output images.</summary>
    int OutputSize { get; }

    /// <summary>Rows mapped together.</summary>
    int BatchSize { get; }

    /// <summary>Checks the input schema and returns the columns the output depends on.</summary>
    IReadOnlyList<DataViewSchema.Column> CheckInput(DataViewSchema inputSchema);

    /// <summary>A reader of the current row of <paramref name="row"/> (which has the <see cref="CheckInput"/> columns active);
    /// its argument is the row index. Throws, naming the column and the value found, for a row it cannot map (e.g. an image
    /// or mask of the wrong size).</summary>
    Func<long, TRequest> CreateReader(DataViewRow row);

    /// <summary>Maps a batch of rows to Bgra32 pixel arrays, one per row, each depending only on its own row.</summary>
    byte[][] MapBatch(IReadOnlyList<TRequest> requests);
}

/// <summary>Helpers of the image-to-image transformers.</summary>
internal static class ImageMapping
{
    /// <summary>The input schema without hidden columns and without <paramref name="outputColumnName"/>, plus the output image column.</summary>
    public static DataViewSchema OutputSchema(DataViewSchema inputSchema, string outputColumnName, int size)
    {
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema.Where(c => !c.IsHidden && c.Name != outputColumnName));
        builder.AddColumn(outputColumnName, new ImageDataViewType(size, size));
        return builder.ToSchema();
    }

    /// <summary>The same on a <see cref="SchemaShape"/> (estimators).</summary>
    public static SchemaShape OutputSchema(SchemaShape inputSchema, string outputColumnName, int size)
    {
        var columns = inputSchema.ToDictionary(c => c.Name);
        columns[outputColumnName] = new SchemaShape.Column(outputColumnName, SchemaShape.Column.VectorKind.Scalar,
            new ImageDataViewType(size, size), false);
        return new SchemaShape(columns.Values);
    }
}
