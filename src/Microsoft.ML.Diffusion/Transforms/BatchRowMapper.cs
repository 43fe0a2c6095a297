
namespace Microsoft.ML.Diffusion.Transforms;

/// <summary>
/// What <see cref="BatchMappingDataView{TRequest, TResult}"/> and <see cref="BatchMappingRowMapper{TRequest, TResult}"/> need
/// from a transformer that adds columns computed by a network in batches: which input columns it reads, how to read one row
/// as a <typeparamref name="TRequest"/>, how to map a batch of requests to one <typeparamref name="TResult"/> per row, and the
/// getters of its output columns, which are the last <see cref="OutputColumnCount"/> columns of the output schema.
/// </summary>
/// <typeparam name="TRequest">What one input row holds for the mapping.</typeparam>
/// <typeparam name="TResult">What the mapping gives one row; the output getters read it.</typeparam>
internal interface IBatchRowMapper<TRequest, TResult>
{
    /// <summary>Rows mapped together.</summary>
    int BatchSize { get; }

    /// <summary>How many columns the transform adds (the last ones of the output schema).</summary>
    int OutputColumnCount { get; }

    /// <summary>Checks the input schema and returns the columns the outputs depend on.</summary>
    IReadOnlyList<DataViewSchema.Column> CheckInput(DataViewSchema inputSchema);

    /// <summary>A reader of the current row of <paramref name="row"/> (which has the <see cref="CheckInput"/> columns active);
    /// its argument is the row index. Throws, naming the column and the value found, for a row it cannot map (e.g. an image
    /// or mask of the wrong size).</summary>
    Func<long, TRequest> CreateReader(DataViewRow row);

    /// <summary>Maps a batch of rows, one result per row, each depending only on its own row.</summary>
    TResult[] MapBatch(IReadOnlyList<TRequest> requests);

    /// <summary>
    /// The getter (a <c>ValueGetter&lt;TValue&gt;</c>) of output column <paramref name="outputIndex"/> (0 for the first added
    /// column), which reads the row's result through <paramref name="result"/>; throws, naming <paramref name="column"/> and both
    /// types, when <paramref name="valueType"/> is not the column's type.
    /// </summary>
    Delegate CreateGetter(int outputIndex, DataViewSchema.Column column, Type valueType, Func<TResult> result);
}
