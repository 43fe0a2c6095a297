using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;
using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Transforms;

/// <summary>One input row of an image-to-image transform: its index, its image as C x H x W floats in [-1, 1], and its
/// keep mask (H x W, 1 keeps, 0 fills) when the transform reads one, and its class index when it reads a label column.</summary>
internal sealed record ImageRequest(long Row, float[] Image, float[]? Mask, long? Class = null)
{
    /// <summary>The images of <paramref name="requests"/> as one float tensor [N, <paramref name="channels"/>, size, size] on the CPU.</summary>
    public static Tensor Images(IReadOnlyList<ImageRequest> requests, int channels, int size) =>
        Stack(requests.Select(r => r.Image).ToList(), channels, size);

    /// <summary>The keep masks of <paramref name="requests"/> (all present) as one float tensor [N, 1, size, size] on the CPU.</summary>
    public static Tensor Masks(IReadOnlyList<ImageRequest> requests, int size) =>
        Stack(requests.Select(r => r.Mask!).ToList(), 1, size);

    /// <summary>Images read from rows (C x H x W floats each) as one float tensor [N, <paramref name="channels"/>, size, size] on the CPU.</summary>
    public static Tensor Stack(IReadOnlyList<float[]> images, int channels, int size)
    {
        int per = channels * size * size;
        var values = new float[images.Count * per];
        for (int i = 0; i < images.Count; i++) images[i].CopyTo(values, i * per);
        return tensor(values, new long[] { images.Count, channels, size, size });
    }
}

/// <summary>
/// A batch mapper that adds one image per row: <see cref="IBatchRowMapper{TRequest, TResult}.MapBatch"/> gives Bgra32 pixels,
/// <see cref="OutputSize"/> square, which the output column serves as a new <see cref="MLImage"/> on each call. Image-to-image
/// transformers (<see cref="ImageToImageTransformer"/>, <see cref="AutoencoderModel"/>) read <see cref="ImageRequest"/>s;
/// generation (<see cref="GenerationMapper"/>) reads <see cref="GenerationRequest"/>s.
/// </summary>
/// <typeparam name="TRequest">What one input row holds for the mapping.</typeparam>
internal interface IImageBatchMapper<TRequest> : IBatchRowMapper<TRequest, byte[]>
{
    /// <summary>The column the transform adds.</summary>
    string OutputColumnName { get; }

    /// <summary>Side of the output images.</summary>
    int OutputSize { get; }

    int IBatchRowMapper<TRequest, byte[]>.OutputColumnCount => 1;

    Delegate IBatchRowMapper<TRequest, byte[]>.CreateGetter(int outputIndex, DataViewSchema.Column column, Type valueType, Func<byte[]> result)
    {
        if (valueType != typeof(MLImage))
            throw new InvalidOperationException($"Column '{column.Name}' holds MLImage values; the getter asked for {valueType.Name}.");
        int size = OutputSize;
        // A new image each call: downstream image transforms dispose the images they read.
        ValueGetter<MLImage> getter = (ref MLImage value) => value = MLImage.CreateFromPixels(size, size, MLPixelFormat.Bgra32, result());
        return getter;
    }
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
