using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// The lazy output of <see cref="DiffusionModel.Transform"/>: the input's columns plus one generated image per row.
/// A second cursor reads the seeds ahead so that images are generated in batches while every other column
/// passes through from the input cursor.
/// </summary>
internal sealed class GeneratedImageDataView : IDataView
{
    private readonly DiffusionModel _model;
    private readonly IDataView _source;

    public GeneratedImageDataView(DiffusionModel model, IDataView source, DataViewSchema schema)
    {
        _model = model;
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
        private readonly GeneratedImageDataView _parent;
        private readonly DataViewRowCursor _input;
        private readonly bool[] _active;
        private readonly int _outputIndex;
        private readonly DataViewRowCursor? _lookahead;
        private readonly ValueGetter<uint>? _seedGetter;
        private readonly Func<long>? _labelReader;
        private readonly SamplerOptions _sampler;
        private readonly Queue<byte[]> _ready = new();
        private byte[]? _current;
        private long _position = -1;
        private long _lookaheadRow;

        public Cursor(GeneratedImageDataView parent, IEnumerable<DataViewSchema.Column> columnsNeeded)
        {
            _parent = parent;
            var schema = parent.Schema;
            _outputIndex = schema.Count - 1;
            _active = new bool[schema.Count];
            foreach (var c in columnsNeeded) _active[c.Index] = true;
            var src = parent._source.Schema;
            var inputCols = schema.Take(_outputIndex).Where(c => _active[c.Index]).Select(c => src[c.Name]).ToList();
            _input = parent._source.GetRowCursor(inputCols);
            _sampler = parent._model.DefaultSampler;
            if (_active[_outputIndex])
            {
                var seedCol = parent._model.CheckSeedColumn(src);
                var labelCol = parent._model.CheckLabelColumn(src);
                var needed = new[] { seedCol, labelCol }.Where(c => c is not null).Select(c => c!.Value).ToArray();
                _lookahead = parent._source.GetRowCursor(needed);
                if (seedCol is { } sc2) _seedGetter = _lookahead.GetGetter<uint>(sc2);
                if (labelCol is { } lc) _labelReader = LabelColumn.Reader(_lookahead, lc, parent._model.RequestClassCount(_sampler), () => _lookaheadRow);
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
                if (_ready.Count == 0) GenerateNextBatch();
                _current = _ready.Dequeue();
            }
            return true;
        }

        private void GenerateNextBatch()
        {
            var seeds = new List<uint>(_sampler.BatchSize);
            var classes = _labelReader is null ? null : new List<long>(_sampler.BatchSize);
            uint seed = 0;
            while (seeds.Count < _sampler.BatchSize && _lookahead!.MoveNext())
            {
                if (_seedGetter != null) _seedGetter(ref seed);
                else seed = DiffusionModel.SeedOfRow(_sampler, _lookaheadRow);
                seeds.Add(seed);
                classes?.Add(_labelReader!());
                _lookaheadRow++;
            }
            if (seeds.Count == 0)
                throw new InvalidOperationException("The input changed while it was read: the seed cursor ended before the row cursor.");
            foreach (var px in _parent._model.GeneratePixels(seeds, classes?.ToArray(), _sampler))
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
            int size = _parent._model.ImageSize;
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
