using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion.Transforms;

/// <summary>
/// The lazy output of a transformer that adds columns computed in batches (<see cref="IBatchRowMapper{TRequest, TResult}"/>:
/// generation, inpainting, upscaling and autoencoding add an image, the noisy classifier a label and scores): the input's
/// columns plus the added ones. A second cursor reads the rows the outputs depend on ahead, so that they are mapped in batches
/// while every other column passes through from the input cursor.
/// </summary>
/// <typeparam name="TRequest">What the mapper reads of one row.</typeparam>
/// <typeparam name="TResult">What the mapper gives one row.</typeparam>
internal sealed class BatchMappingDataView<TRequest, TResult> : IDataView where TResult : class
{
    private readonly IBatchRowMapper<TRequest, TResult> _mapper;
    private readonly IDataView _source;

    public BatchMappingDataView(IBatchRowMapper<TRequest, TResult> mapper, IDataView source, DataViewSchema schema)
    {
        _mapper = mapper;
        _source = source;
        Schema = schema;
    }

    public bool CanShuffle => false;

    public DataViewSchema Schema { get; }

    public long? GetRowCount() => _source.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) =>
        new Cursor(this, columnsNeeded);

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        new[] { GetRowCursor(columnsNeeded, rand) };

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly BatchMappingDataView<TRequest, TResult> _parent;
        private readonly DataViewRowCursor _input;
        private readonly bool[] _active;
        private readonly int _firstOutput;
        private readonly DataViewRowCursor? _lookahead;
        private readonly Func<long, TRequest>? _reader;
        private readonly Queue<TResult> _ready = new();
        private TResult? _current;
        private long _position = -1;
        private long _lookaheadRow;

        public Cursor(BatchMappingDataView<TRequest, TResult> parent, IEnumerable<DataViewSchema.Column> columnsNeeded)
        {
            _parent = parent;
            var schema = parent.Schema;
            _firstOutput = schema.Count - parent._mapper.OutputColumnCount;
            _active = new bool[schema.Count];
            foreach (var c in columnsNeeded) _active[c.Index] = true;
            var src = parent._source.Schema;
            var inputCols = schema.Take(_firstOutput).Where(c => _active[c.Index]).Select(c => src[c.Name]).ToList();
            _input = parent._source.GetRowCursor(inputCols);
            if (_active.Skip(_firstOutput).Any(a => a))
            {
                var dependencies = parent._mapper.CheckInput(src);
                _lookahead = parent._source.GetRowCursor(dependencies);
                _reader = parent._mapper.CreateReader(_lookahead);
            }
        }

        public override DataViewSchema Schema => _parent.Schema;
        public override long Position => _position;
        public override long Batch => 0;

        public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();

        public override bool MoveNext()
        {
            if (!_input.MoveNext()) return false;
            _position++;
            if (_lookahead != null)
            {
                if (_ready.Count == 0) MapNextBatch();
                _current = _ready.Dequeue();
            }
            return true;
        }

        private void MapNextBatch()
        {
            var requests = new List<TRequest>(_parent._mapper.BatchSize);
            while (requests.Count < _parent._mapper.BatchSize && _lookahead!.MoveNext())
            {
                requests.Add(_reader!(_lookaheadRow));
                _lookaheadRow++;
            }
            if (requests.Count == 0)
                throw new InvalidOperationException("The input changed while it was read: the look-ahead cursor ended before the row cursor.");
            foreach (var result in _parent._mapper.MapBatch(requests))
                _ready.Enqueue(result);
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!_active[column.Index])
                throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            if (column.Index < _firstOutput)
                return _input.GetGetter<TValue>(_parent._source.Schema[column.Name]);
            return (ValueGetter<TValue>)_parent._mapper.CreateGetter(column.Index - _firstOutput, column, typeof(TValue),
                () => _current ?? throw new InvalidOperationException("The cursor is not on a row."));
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _input.Dispose();
                _lookahead?.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
