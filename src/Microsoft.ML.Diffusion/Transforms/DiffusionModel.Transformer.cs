using Microsoft.ML.Data;
using Microsoft.ML.Diffusion.Transforms;
using Microsoft.ML.Diffusion.Columns;

namespace Microsoft.ML.Diffusion;

// DiffusionModel as an ML.NET ITransformer: the output schema, the input columns it reads, Transform and the row mapper.
public sealed partial class DiffusionModel
{
    /// <summary>Always true: the model maps each row on its own (a PredictionEngine works).</summary>
    public bool IsRowToRowMapper => true;

    /// <summary>The input schema plus the output image column (ImageDataViewType ImageSize x ImageSize).</summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        CheckSeedColumn(inputSchema);
        CheckLabelColumn(inputSchema);
        return ImageMapping.OutputSchema(inputSchema, OutputColumnName, ImageSize);
    }

    /// <summary>The seed column when present (UInt32); throws when it has another type.</summary>
    internal DataViewSchema.Column? CheckSeedColumn(DataViewSchema schema)
    {
        var col = schema.GetColumnOrNull(SeedColumnName);
        if (col is { } c && c.Type != NumberDataViewType.UInt32)
            throw new ArgumentOutOfRangeException(nameof(schema),
                $"Column '{SeedColumnName}' has type {c.Type}; expected UInt32 seeds (see mlContext.Generative.CreateRequests).");
        return col;
    }

    /// <summary>
    /// The class-label column of a class-conditional model when the input has it (else null: the null label for every row);
    /// throws when its type is not a key or integer, or when requests made with labels
    /// (<see cref="GenerativeCatalog.CreateRequests(int, uint, IReadOnlyList{int}, string, string)"/>) reach a model without
    /// class conditioning or carry the labels in another column. With classifier guidance (<see cref="SamplerOptions.Classifier"/>
    /// in the default sampler) an unconditional model reads the requests' label column (or a column named "Label") for the classifier.
    /// </summary>
    internal DataViewSchema.Column? CheckLabelColumn(DataViewSchema schema)
    {
        bool classifier = _defaultSampler.Classifier is not null;
        foreach (var c in schema)
        {
            if (c.IsHidden || c.Annotations.Schema.GetColumnOrNull(LabelColumn.RequestAnnotation) is null) continue;
            if (NumClasses == 0 && classifier)
            {
                // Classifier guidance on an unconditional model: the request labels are the classifier's.
                LabelColumn.CheckType(c.Name, c.Type);
                return c;
            }
            if (NumClasses == 0)
                throw new ArgumentOutOfRangeException(nameof(schema),
                    $"Column '{c.Name}' holds class labels for generation, but this diffusion model has no class conditioning " +
                    "(trained without DiffusionTrainer.Options.LabelColumnName); make the requests without labels, or set SamplerOptions.Classifier " +
                    "(classifier guidance) with WithSampler.");
            if (c.Name != LabelColumnName)
                throw new ArgumentOutOfRangeException(nameof(schema),
                    $"Column '{c.Name}' holds class labels for generation, but this model reads them from column '{LabelColumnName}'; " +
                    $"pass labelColumnName: \"{LabelColumnName}\" to CreateRequests.");
        }
        if (NumClasses == 0 && classifier)
        {
            // No annotated request column: a plain column named like the trainer's default label column carries the labels.
            var plain = schema.GetColumnOrNull(DiffusionDefaults.LabelColumnName);
            if (plain is { } p) LabelColumn.CheckType(p.Name, p.Type);
            return plain;
        }
        if (NumClasses == 0 || LabelColumnName is null) return null;
        var col = schema.GetColumnOrNull(LabelColumnName);
        if (col is { } label) LabelColumn.CheckType(label.Name, label.Type);
        return col;
    }

    /// <summary>Lazily adds the generated images; rows are generated in batches of the sampler's BatchSize.</summary>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Pipeline.CheckGenerates();
        return new BatchMappingDataView<GenerationRequest, byte[]>(new GenerationMapper(this), input, GetOutputSchema(input.Schema));
    }

    /// <summary>A row-to-row mapper (one image per row, batch of one) for PredictionEngine.</summary>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        Pipeline.CheckGenerates();
        return new BatchMappingRowMapper<GenerationRequest, byte[]>(new GenerationMapper(this), inputSchema, GetOutputSchema(inputSchema));
    }
}
