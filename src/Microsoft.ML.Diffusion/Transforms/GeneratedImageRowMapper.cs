using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Row-by-row mapping for <see cref="DiffusionModel"/> (PredictionEngine): each row's image is generated on its own
/// (a batch of one) from the row's seed, so it equals the image the batched <see cref="DiffusionModel.Transform"/> makes.
/// </summary>
internal sealed class GeneratedImageRowMapper : IRowToRowMapper
{
    private readonly DiffusionModel _model;
    private readonly DataViewSchema.Column? _seedColumn;
    private readonly DataViewSchema.Column? _labelColumn;

    public GeneratedImageRowMapper(DiffusionModel model, DataViewSchema inputSchema, DataViewSchema outputSchema)
    {
        _model = model;
        InputSchema = inputSchema;
        OutputSchema = outputSchema;
        _seedColumn = model.CheckSeedColumn(inputSchema);
        _labelColumn = model.CheckLabelColumn(inputSchema);
    }

    public DataViewSchema InputSchema { get; }

    public DataViewSchema OutputSchema { get; }

    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        var result = new List<DataViewSchema.Column>();
        int outputIndex = OutputSchema.Count - 1;
        foreach (var c in dependingColumns)
        {
            if (c.Index == outputIndex)
            {
                if (_seedColumn is { } s) result.Add(s);
                if (_labelColumn is { } l) result.Add(l);
            }
            else
            {
                result.Add(InputSchema[c.Name]);
            }
        }
        return result.Distinct();
    }

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns) =>
        new Row(this, input, activeColumns);

    private sealed class Row : DataViewRow
    {
        private readonly GeneratedImageRowMapper _parent;
        private readonly DataViewRow _input;
        private readonly bool[] _active;
        private readonly ValueGetter<uint>? _seedGetter;
        private readonly Func<long>? _labelReader;
        private long _cachedPosition = -1;
        private byte[]? _cached;

        public Row(GeneratedImageRowMapper parent, DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
        {
            _parent = parent;
            _input = input;
            _active = new bool[parent.OutputSchema.Count];
            foreach (var c in activeColumns) _active[c.Index] = true;
            if (parent._seedColumn is { } s && _active[parent.OutputSchema.Count - 1])
                _seedGetter = input.GetGetter<uint>(s);
            if (parent._labelColumn is { } l && _active[parent.OutputSchema.Count - 1])
                _labelReader = LabelColumn.Reader(input, l, parent._model.RequestClassCount(parent._model.DefaultSampler), () => input.Position);
        }

        public override DataViewSchema Schema => _parent.OutputSchema;
        public override long Position => _input.Position;
        public override long Batch => _input.Batch;
        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            int outputIndex = _parent.OutputSchema.Count - 1;
            if (column.Index != outputIndex)
                return _input.GetGetter<TValue>(_parent.InputSchema[column.Name]);
            if (typeof(TValue) != typeof(MLImage))
                throw new InvalidOperationException($"Column '{column.Name}' holds MLImage values; the getter asked for {typeof(TValue).Name}.");
            var model = _parent._model;
            ValueGetter<MLImage> getter = (ref MLImage value) =>
            {
                if (_cached is null || _cachedPosition != _input.Position)
                {
                    var sampler = model.DefaultSampler;
                    uint seed = 0;
                    if (_seedGetter != null) _seedGetter(ref seed);
                    else seed = DiffusionModel.SeedOfRow(sampler, Math.Max(0, _input.Position));
                    var classes = _labelReader is null ? null : new[] { _labelReader() };
                    _cached = model.GeneratePixels(new[] { seed }, classes, sampler)[0];
                    _cachedPosition = _input.Position;
                }
                value = MLImage.CreateFromPixels(model.ImageSize, model.ImageSize, MLPixelFormat.Bgra32, _cached);
            };
            return (ValueGetter<TValue>)(Delegate)getter;
        }
    }
}
