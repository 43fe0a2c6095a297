using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// Row-by-row mapping of a transformer that adds one image per row (PredictionEngine): each row is mapped on its own
/// (a batch of one), so its image equals the one the batched Transform (<see cref="ImageMappingDataView{TRequest}"/>) makes for it.
/// </summary>
/// <typeparam name="TRequest">What the mapper reads of one row.</typeparam>
internal sealed class ImageMappingRowMapper<TRequest> : IRowToRowMapper
{
    private readonly IImageBatchMapper<TRequest> _mapper;
    private readonly IReadOnlyList<DataViewSchema.Column> _dependencies;

    public ImageMappingRowMapper(IImageBatchMapper<TRequest> mapper, DataViewSchema inputSchema, DataViewSchema outputSchema)
    {
        _mapper = mapper;
        InputSchema = inputSchema;
        OutputSchema = outputSchema;
        _dependencies = mapper.CheckInput(inputSchema);
    }

    public DataViewSchema InputSchema { get; }

    public DataViewSchema OutputSchema { get; }

    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        var result = new List<DataViewSchema.Column>();
        int outputIndex = OutputSchema.Count - 1;
        foreach (var c in dependingColumns)
        {
            if (c.Index == outputIndex) result.AddRange(_dependencies);
            else result.Add(InputSchema[c.Name]);
        }
        return result.Distinct();
    }

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns) =>
        new Row(this, input, activeColumns);

    private sealed class Row : DataViewRow
    {
        private readonly ImageMappingRowMapper<TRequest> _parent;
        private readonly DataViewRow _input;
        private readonly bool[] _active;
        private readonly Func<long, TRequest>? _reader;

        public Row(ImageMappingRowMapper<TRequest> parent, DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
        {
            _parent = parent;
            _input = input;
            _active = new bool[parent.OutputSchema.Count];
            foreach (var c in activeColumns) _active[c.Index] = true;
            if (_active[parent.OutputSchema.Count - 1]) _reader = parent._mapper.CreateReader(input);
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
            if (_reader is null)
                throw new InvalidOperationException($"Column '{column.Name}' is not active in this row.");
            var mapper = _parent._mapper;
            ValueGetter<MLImage> getter = (ref MLImage value) =>
            {
                // Not cached by position: a PredictionEngine reuses the position for different inputs.
                var pixels = mapper.MapBatch(new[] { _reader(Math.Max(0, _input.Position)) })[0];
                value = MLImage.CreateFromPixels(mapper.OutputSize, mapper.OutputSize, MLPixelFormat.Bgra32, pixels);
            };
            return (ValueGetter<TValue>)(Delegate)getter;
        }
    }
}
