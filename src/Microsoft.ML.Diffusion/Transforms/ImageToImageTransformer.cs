using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Transforms;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// The shared part of the transformers that map each row's image with a <see cref="DiffusionModel"/>
/// (<see cref="InpaintingTransformer"/>, <see cref="UpscalingTransformer"/>, <see cref="SdeditTransformer"/>): the lazy, batched <see cref="Transform"/>, the
/// row-to-row mapper of a PredictionEngine, the output schema, the frame of the saved model (version, output and image
/// columns, the derived transformer's own fields, then the diffusion model as the sub-model "DiffusionModel") and the
/// ownership of a loaded model. A derived transformer gives only its input checks, its row reader, its batch mapping and its
/// own saved fields.
/// </summary>
public abstract class ImageToImageTransformer : ITransformer, ICanSaveModel, IDisposable, IImageBatchMapper<ImageRequest>
{
    private const string ModelEntryName = "DiffusionModel";
    private readonly bool _ownsModel;
    private bool _disposed;

    private protected ImageToImageTransformer(IHostEnvironment env, string name, DiffusionModel model, string outputColumnName,
        string imageColumnName, bool ownsModel)
    {
        Host = env.Register(name);
        Model = model;
        OutputColumnName = outputColumnName;
        ImageColumnName = imageColumnName;
        _ownsModel = ownsModel;
    }

    /// <summary>The diffusion model that samples the pixels the input does not give.</summary>
    public DiffusionModel Model { get; }

    /// <summary>The column of output images (the model's size).</summary>
    public string OutputColumnName { get; }

    /// <summary>The column of input images.</summary>
    public string ImageColumnName { get; }

    /// <summary>Replaces the model's network in RePaint when set (inpainting, upscaling by an unconditional model): tests count network calls through it.</summary>
    internal Func<Tensor, Tensor, Tensor>? NetworkOverride { get; set; }

    private protected IHost Host { get; }

    /// <summary>Rows mapped together (the options' BatchSize).</summary>
    private protected abstract int BatchSize { get; }

    /// <summary>The model signature, versions and loader of the derived transformer's saved format.</summary>
    private protected abstract VersionInfo VersionInfo { get; }

    /// <summary>Checks the input schema and returns the columns the output depends on; throws, naming the column, the size
    /// or type found and the one expected.</summary>
    private protected abstract IReadOnlyList<DataViewSchema.Column> CheckInput(DataViewSchema inputSchema);

    /// <summary>A reader of the current row of <paramref name="row"/> (see <see cref="IBatchRowMapper{TRequest, TResult}.CreateReader"/>).</summary>
    private protected abstract Func<long, ImageRequest> CreateReader(DataViewRow row);

    /// <summary>Maps a batch of rows to Bgra32 pixel arrays of the model's size, one per row, each depending on its own row only.</summary>
    private protected abstract byte[][] MapBatch(IReadOnlyList<ImageRequest> requests);

    /// <summary>Writes the derived transformer's own fields, between the image column and the diffusion model.</summary>
    private protected abstract void SaveSettings(BinaryWriter writer);

    // ---- IImageBatchMapper ----

    int IImageBatchMapper<ImageRequest>.OutputSize => Model.ImageSize;

    int IBatchRowMapper<ImageRequest, byte[]>.BatchSize => BatchSize;

    IReadOnlyList<DataViewSchema.Column> IBatchRowMapper<ImageRequest, byte[]>.CheckInput(DataViewSchema inputSchema) => CheckInput(inputSchema);

    Func<long, ImageRequest> IBatchRowMapper<ImageRequest, byte[]>.CreateReader(DataViewRow row) => CreateReader(row);

    byte[][] IBatchRowMapper<ImageRequest, byte[]>.MapBatch(IReadOnlyList<ImageRequest> requests)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return MapBatch(requests);
    }

    // ---- ITransformer ----

    /// <summary>Always true: each row is mapped on its own (a PredictionEngine works).</summary>
    public bool IsRowToRowMapper => true;

    /// <summary>The input schema plus the output image column; throws, naming the column and both sizes, for a missing or
    /// wrongly sized input column.</summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        CheckInput(inputSchema);
        return ImageMapping.OutputSchema(inputSchema, OutputColumnName, Model.ImageSize);
    }

    /// <summary>Lazily adds the output images; rows are mapped in batches of the options' BatchSize.</summary>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new BatchMappingDataView<ImageRequest, byte[]>(this, input, GetOutputSchema(input.Schema));
    }

    /// <summary>A row-to-row mapper (one row at a time) for PredictionEngine.</summary>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return new BatchMappingRowMapper<ImageRequest, byte[]>(this, inputSchema, GetOutputSchema(inputSchema));
    }

    // ---- persistence ----

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.CheckAtModel();
        ctx.SetVersionInfo(VersionInfo);
        // string: output column; string: image column
        ctx.Writer.Write(OutputColumnName);
        ctx.Writer.Write(ImageColumnName);
        // the derived transformer's fields (SaveSettings)
        SaveSettings(ctx.Writer);
        // sub-model "DiffusionModel": the network and its config
        ctx.SaveModel(Model, ModelEntryName);
    }

    /// <summary>Checks the saved version and reads the output and image columns (the start of the frame <see cref="ICanSaveModel.Save"/> writes).</summary>
    private protected static (string OutputColumnName, string ImageColumnName) LoadColumns(ModelLoadContext ctx, VersionInfo version)
    {
        ctx.CheckAtModel(version);
        string output = ctx.Reader.ReadString();
        string image = ctx.Reader.ReadString();
        return (output, image);
    }

    /// <summary>Reads a saved <see cref="InferenceEngine"/> (an int); throws <see cref="InvalidDataException"/> for a value that names none.</summary>
    private protected static InferenceEngine ReadEngine(BinaryReader reader)
    {
        int value = reader.ReadInt32();
        if (!Enum.IsDefined((InferenceEngine)value))
            throw new InvalidDataException(
                $"The saved transformer's inference engine is {value}; expected one of {string.Join(", ", Enum.GetValues<InferenceEngine>().Select(e => $"{(int)e} ({e})"))}. The file is corrupt.");
        return (InferenceEngine)value;
    }

    /// <summary>Loads the diffusion model (the end of the frame), after the derived transformer has read its own fields.</summary>
    private protected static DiffusionModel LoadModel(IHostEnvironment env, ModelLoadContext ctx)
    {
        ctx.LoadModel<DiffusionModel, SignatureLoadModel>(env, out var model, ModelEntryName);
        return model;
    }

    /// <summary>Frees the diffusion model when this transformer was loaded from a file (a model passed to the estimator stays the caller's).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_ownsModel) Model.Dispose();
    }
}
