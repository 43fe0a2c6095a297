using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion;

/// <summary>
/// The lazy output of <see cref="NoisyClassifierModel.Transform"/>: the input's columns plus the predicted label and the class
/// probabilities of each row's image. A second cursor reads the images ahead so that they are classified in batches while every
/// other column passes through from the input cursor.
/// </summary>
internal sealed class ClassifierScoreDataView : IDataView
{
    private const int BatchSize = 64;
    private readonly NoisyClassifierModel _model;
    private readonly IDataView _source;

    public ClassifierScoreDataView(NoisyClassifierModel model, IDataView source, DataViewSchema schema)
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
        private readonly ClassifierScoreDataView _parent;
        private readonly DataViewRowCursor _input;
        private readonly bool[] _active;
        private readonly int _labelIndex;
        private readonly int _scoreIndex;
        private readonly DataViewRowCursor? _lookahead;
        private readonly Func<long, float[]>? _reader;
        private readonly Queue<float[]> _ready = new();
        private float[]? _current;
        private long _position = -1;
        private long _lookaheadRow;

        public Cursor(ClassifierScoreDataView parent, IEnumerable<DataViewSchema.Column> columnsNeeded)
        {
            _parent = parent;
            var schema = parent.Schema;
            _labelIndex = schema.Count - 2;
            _scoreIndex = schema.Count - 1;
            _active = new bool[schema.Count];
            foreach (var c in columnsNeeded) _active[c.Index] = true;
            var src = parent._source.Schema;
            var inputCols = schema.Take(_labelIndex).Where(c => _active[c.Index]).Select(c => src[c.Name]).ToList();
            _input = parent._source.GetRowCursor(inputCols);
            if (_active[_labelIndex] || _active[_scoreIndex])
            {
                var m = parent._model;
                var imageCol = ImageMappingColumns.CheckImage(src, m.ImageColumnName, m.ImageSize, "the noisy classifier's image size");
                _lookahead = parent._source.GetRowCursor(new[] { imageCol });
                _reader = ImageMappingColumns.ImageReader(_lookahead, imageCol, m.ImageSize, m.Channels, "the noisy classifier's image size");
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
                if (_ready.Count == 0) ScoreNextBatch();
                _current = _ready.Dequeue();
            }
            return true;
        }

        private void ScoreNextBatch()
        {
            var images = new List<float[]>(BatchSize);
            while (images.Count < BatchSize && _lookahead!.MoveNext())
            {
                images.Add(_reader!(_lookaheadRow));
                _lookaheadRow++;
            }
            if (images.Count == 0)
                throw new InvalidOperationException("The input changed while it was read: the look-ahead cursor ended before the row cursor.");
            foreach (var p in _parent._model.ScoreBatch(images))
                _ready.Enqueue(p);
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!_active[column.Index])
                throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            if (column.Index < _labelIndex)
                return _input.GetGetter<TValue>(_parent._source.Schema[column.Name]);
            if (column.Index == _labelIndex)
            {
                if (typeof(TValue) != typeof(uint))
                    throw new InvalidOperationException($"Column '{column.Name}' holds UInt32 keys; the getter asked for {typeof(TValue).Name}.");
                ValueGetter<uint> label = (ref uint value) =>
                {
                    var p = _current ?? throw new InvalidOperationException("The cursor is not on a row.");
                    int best = 0;
                    for (int k = 1; k < p.Length; k++) if (p[k] > p[best]) best = k;
                    value = (uint)best + 1;                                // key k + 1 = class k
                };
                return (ValueGetter<TValue>)(Delegate)label;
            }
            if (typeof(TValue) != typeof(VBuffer<float>))
                throw new InvalidOperationException($"Column '{column.Name}' holds VBuffer<Single> values; the getter asked for {typeof(TValue).Name}.");
            ValueGetter<VBuffer<float>> score = (ref VBuffer<float> value) =>
            {
                var p = _current ?? throw new InvalidOperationException("The cursor is not on a row.");
                var editor = VBufferEditor.Create(ref value, p.Length);
                p.CopyTo(editor.Values);
                value = editor.Commit();
            };
            return (ValueGetter<TValue>)(Delegate)score;
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
