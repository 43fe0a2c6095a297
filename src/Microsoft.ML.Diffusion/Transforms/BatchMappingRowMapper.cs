using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion.Transforms;

/// <summary>
/// Row-by-row mapping of a transformer that adds columns computed in batches (PredictionEngine): each row is mapped on its
/// own (a batch of one), so its outputs equal, up to float rounding, the ones the batched Transform
/// (<see cref="BatchMappingDataView{TRequest, TResult}"/>) makes for it.
/// </summary>
/// <typeparam name="TRequest">What the mapper reads of one row.</typeparam>
/// <typeparam name="TResult">What the mapper gives one row.</typeparam>
internal sealed class BatchMappingRowMapper<TRequest, TResult> : IRowToRowMapper
{
    private readonly IBatchRowMapper<TRequest, TResult> _mapper;
    private readonly IReadOnlyList<DataViewSchema.Column> _dependencies;

    public BatchMappingRowMapper(IBatchRowMapper<TRequest, TResult> mapper, DataViewSchema inputSchema, DataViewSchema outputSchema)
    {
        _mapper = mapper;
        InputSchema = inputSchema;
        OutputSchema = outputSchema;
        _dependencies = mapper.CheckInput(inputSchema);
    }

    private int FirstOutput => OutputSchema.Count - _mapper.OutputColumnCount;

    public DataViewSchema InputSchema { get; }

    public DataViewSchema OutputSchema { get; }

    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        var result = new List<DataViewSchema.Column>();
        foreach (var c in dependingColumns)
        {
            if (c.Index >= FirstOutput) result.AddRange(_dependencies);
            else result.Add(InputSchema[c.Name]);
        }
        return result.Distinct();
    }

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns) =>
        new Row(this, input, activeColumns);

    private sealed class Row : DataViewRow
    {
        private readonly BatchMappingRowMapper<TRequest, TResult> _parent;
        private readonly DataViewRow _input;
        private readonly bool[] _active;
        private readonly Func<long, TRequest>? _reader;

        public Row(BatchMappingRowMapper<TRequest, TResult> parent, DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
        {
            _parent = parent;
            _input = input;
            _active = new bool[parent.OutputSchema.Count];
            foreach (var c in activeColumns) _active[c.Index] = true;
            if (_active.Skip(parent.FirstOutput).Any(a => a)) _reader = parent._mapper.CreateReader(input);
        }

        public override DataViewSchema Schema => _parent.OutputSchema;
        public override long Position => _input.Position;
        public override long Batch => _input.Batch;
        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            int first = _parent.FirstOutput;
            if (column.Index < first)
                return _input.GetGetter<TValue>(_parent.InputSchema[column.Name]);
            if (_reader is null)
                throw new InvalidOperationException($"Column '{column.Name}' is not active in this row.");
            var mapper = _parent._mapper;
            // Not cached by position: a PredictionEngine reuses the position for different inputs.
            return (ValueGetter<TValue>)mapper.CreateGetter(column.Index - first, column, typeof(TValue),
                () => mapper.MapBatch(new[] { _reader(Math.Max(0, _input.Position)) })[0]);
        }
    }
}
