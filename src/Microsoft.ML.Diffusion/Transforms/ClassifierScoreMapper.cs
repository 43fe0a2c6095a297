using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion.Transforms;

/// <summary>
/// The batch mapping of <see cref="NoisyClassifierModel"/> as a transformer: each row's image (column
/// <see cref="NoisyClassifierModel.ImageColumnName"/>) is classified at t = 0, and two columns are added, the predicted label
/// (a key, value k + 1 for class k) and the class probabilities.
/// </summary>
internal sealed class ClassifierScoreMapper : IBatchRowMapper<float[], float[]>
{
    private const string Why = "the noisy classifier's image size";
    private readonly NoisyClassifierModel _model;
    // The last single image mapped and its probabilities: a PredictionEngine asks once per output column for the same row.
    // One immutable object, swapped whole, so that cursors on other threads never see an image with another's probabilities.
    private sealed record LastScored(float[] Image, float[] Probabilities);
    private volatile LastScored? _last;

    public ClassifierScoreMapper(NoisyClassifierModel model) => _model = model;

    public int BatchSize => 64;

    public int OutputColumnCount => 2;

    public IReadOnlyList<DataViewSchema.Column> CheckInput(DataViewSchema inputSchema) =>
        new[] { ImageMappingColumns.CheckImage(inputSchema, _model.ImageColumnName, _model.ImageSize, Why) };

    public Func<long, float[]> CreateReader(DataViewRow row) =>
        ImageMappingColumns.ImageReader(row, row.Schema[_model.ImageColumnName], _model.ImageSize, _model.Channels, Why);

    public float[][] MapBatch(IReadOnlyList<float[]> requests)
    {
        var last = _last;
        if (requests.Count == 1 && last is not null && requests[0].AsSpan().SequenceEqual(last.Image))
            return new[] { last.Probabilities };
        var probabilities = _model.ScoreBatch(requests);
        if (requests.Count == 1) _last = new LastScored(requests[0], probabilities[0]);
        return probabilities;
    }

    public Delegate CreateGetter(int outputIndex, DataViewSchema.Column column, Type valueType, Func<float[]> result)
    {
        if (outputIndex == 0)
        {
            if (valueType != typeof(uint))
                throw new InvalidOperationException($"Column '{column.Name}' holds UInt32 keys; the getter asked for {valueType.Name}.");
            ValueGetter<uint> label = (ref uint value) =>
            {
                var p = result();
                int best = 0;
                for (int k = 1; k < p.Length; k++) if (p[k] > p[best]) best = k;
                value = (uint)best + 1;                                    // key k + 1 = class k
            };
            return label;
        }
        if (valueType != typeof(VBuffer<float>))
            throw new InvalidOperationException($"Column '{column.Name}' holds VBuffer<Single> values; the getter asked for {valueType.Name}.");
        ValueGetter<VBuffer<float>> score = (ref VBuffer<float> value) =>
        {
            var p = result();
            var editor = VBufferEditor.Create(ref value, p.Length);
            p.CopyTo(editor.Values);
            value = editor.Commit();
        };
        return score;
    }
}
