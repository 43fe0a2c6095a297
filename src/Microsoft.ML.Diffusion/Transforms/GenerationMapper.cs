using Microsoft.ML.Diffusion.Columns;

namespace Microsoft.ML.Diffusion.Transforms;

/// <summary>One input row of generation: the seed of its noise, and its class index when the model is class-conditional
/// and the input has a label column (null: the null label).</summary>
internal sealed record GenerationRequest(uint Seed, long? Class);

/// <summary>
/// <see cref="DiffusionModel.Transform"/> and <see cref="DiffusionModel.GetRowToRowMapper"/> as an
/// <see cref="IImageBatchMapper{TRequest}"/>: a row is its Seed (UInt32; without a seed column, the sampler's seed + row
/// index) and, for a class-conditional model, its label; a batch is generated with the model's default sampler
/// (captured when the mapper is made), so an image depends on its own row only.
/// </summary>
internal sealed class GenerationMapper : IImageBatchMapper<GenerationRequest>
{
    private readonly DiffusionModel _model;
    private readonly SamplerOptions _sampler;

    public GenerationMapper(DiffusionModel model)
    {
        _model = model;
        _sampler = model.DefaultSampler;
    }

    public string OutputColumnName => _model.OutputColumnName;

    public int OutputSize => _model.ImageSize;

    public int BatchSize => _sampler.BatchSize;

    public IReadOnlyList<DataViewSchema.Column> CheckInput(DataViewSchema inputSchema)
    {
        var columns = new List<DataViewSchema.Column>();
        if (_model.CheckSeedColumn(inputSchema) is { } seed) columns.Add(seed);
        if (_model.CheckLabelColumn(inputSchema) is { } label) columns.Add(label);
        return columns;
    }

    public Func<long, GenerationRequest> CreateReader(DataViewRow row)
    {
        var schema = row.Schema;
        var seedColumn = _model.CheckSeedColumn(schema);
        var labelColumn = _model.CheckLabelColumn(schema);
        var seedGetter = seedColumn is { } s ? row.GetGetter<uint>(s) : null;
        long current = 0;
        var label = labelColumn is { } l ? LabelColumn.Reader(row, l, _model.RequestClassCount(_sampler), () => current) : null;
        return index =>
        {
            current = index;
            uint seed = 0;
            if (seedGetter != null) seedGetter(ref seed);
            else seed = DiffusionModel.SeedOfRow(_sampler, index);
            return new GenerationRequest(seed, label?.Invoke());
        };
    }

    public byte[][] MapBatch(IReadOnlyList<GenerationRequest> requests)
    {
        // Either every row has a class (the input has the label column) or none has.
        var classes = requests[0].Class is null ? null : requests.Select(r => r.Class!.Value).ToArray();
        return _model.GeneratePixels(requests.Select(r => r.Seed).ToArray(), classes, _sampler);
    }
}
