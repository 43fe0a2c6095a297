using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// The lazy output of a transformer that adds one image per row (<see cref="IImageBatchMapper{TRequest}"/>: generation,
/// inpainting, upscaling, autoencoding): the input's columns plus the output image. A second cursor reads the rows the
/// output depends on ahead, so that they are mapped in batches while every other column passes through from the input cursor.
/// </summary>
/// <typeparam name="TRequest">What the mapper reads of one row.</typeparam>
internal sealed class ImageMappingDataView<TRequest> : IDataView
{
    private readonly IImageBatchMapper<TRequest> _mapper;
    private readonly IDataView _source;

    public ImageMappingDataView(IImageBatchMapper<TRequest> mapper, IDataView source, DataViewSchema schema)
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
        private readonly ImageMappingDataView<TRequest> _parent;
        private readonly DataViewRowCursor _input;
        private readonly bool[] _active;
        private readonly int _outputIndex;
        private readonly DataViewRowCursor? _lookahead;
        private readonly Func<long, TRequest>? _reader;
        private readonly Queue<byte[]> _ready = new();
        private byte[]? _current;
        private long _position = -1;
        private long _lookaheadRow;

        public Cursor(ImageMappingDataView<TRequest> parent, IEnumerable<DataViewSchema.Column> columnsNeeded)
        {
            _parent = parent;
            var schema = parent.Schema;
            _outputIndex = schema.Count - 1;
            _active = new bool[schema.Count];
            foreach (var c in columnsNeeded) _active[c.Index] = true;
            var src = parent._source.Schema;
            var inputCols = schema.Take(_outputIndex).Where(c => _active[c.Index]).Select(c => src[c.Name]).ToList();
            _input = parent._source.GetRowCursor(inputCols);
            if (_active[_outputIndex])
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
            foreach (var px in _parent._mapper.MapBatch(requests))
                _ready.Enqueue(px);
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!_active[column.Index])
                throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            if (column.Index != _outputIndex)
                return _input.GetGetter<TValue>(_parent._source.Schema[column.Name]);
            if (typeof(TValue) != typeof(MLImage))
                throw new InvalidOperationException($"Column '{column.Name}' holds MLImage values; the getter asked for {typeof(TValue).Name}.");
            int size = _parent._mapper.OutputSize;
            ValueGetter<MLImage> getter = (ref MLImage value) =>
            {
                if (_current is null) throw new InvalidOperationException("The cursor is not on a row.");
                // A new image each call: downstream image transforms dispose the images they read.
                value = MLImage.CreateFromPixels(size, size, MLPixelFormat.Bgra32, _current);
            };
            return (ValueGetter<TValue>)(Delegate)getter;
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
