using Microsoft.ML.Data;

namespace Microsoft.ML.Diffusion.Columns;

/// <summary>
/// Class-label columns of class-conditional diffusion models: a key type (value k in 1..Count is class k - 1; 0, the
/// missing key, is the null label) or an integer-valued number (class index 0..NumClasses - 1). Errors name the column,
/// the row, the value found and the range expected.
/// </summary>
internal static class LabelColumn
{
    /// <summary>The annotation <see cref="GenerativeCatalog.CreateRequests(int, uint, IReadOnlyList{int}, string, string)"/> puts on
    /// its label column, so that an unconditional model rejects requests made for a conditional one.</summary>
    public const string RequestAnnotation = "DiffusionClassLabels";

    private static readonly Type[] NumberTypes =
    {
        typeof(byte), typeof(sbyte), typeof(short), typeof(ushort), typeof(int), typeof(uint), typeof(long), typeof(ulong),
        typeof(float), typeof(double),
    };

    private const string Expected = "expected a key-typed column (e.g. from MapValueToKey) or an integer-valued number column (Byte .. UInt64, Single, Double)";

    /// <summary>Finds and checks the column; returns the key count for a key type, null for a number column.</summary>
    public static (DataViewSchema.Column Column, ulong? KeyCount) Check(DataViewSchema schema, string name)
    {
        var col = schema.GetColumnOrNull(name)
            ?? throw new ArgumentOutOfRangeException(nameof(schema),
                $"Label column '{name}' was not found in the input; {Expected}. " +
                $"Available columns: {string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => $"'{c.Name}'"))}.");
        return (col, CheckType(name, col.Type));
    }

    /// <summary>Checks the type of label column <paramref name="name"/>; returns the key count for a key type, null for a number.</summary>
    public static ulong? CheckType(string name, DataViewType type)
    {
        if (type is KeyDataViewType key) return key.Count;
        if (type is NumberDataViewType && NumberTypes.Contains(type.RawType)) return null;
        throw new ArgumentOutOfRangeException(nameof(type), $"Label column '{name}' has type {type}; {Expected}.");
    }

    /// <summary>The same check on a <see cref="SchemaShape"/> (estimators).</summary>
    public static void Check(SchemaShape shape, string name)
    {
        if (!shape.TryFindColumn(name, out var col))
            throw new ArgumentOutOfRangeException(nameof(shape), $"Label column '{name}' was not found in the input; {Expected}.");
        bool ok = col.Kind == SchemaShape.Column.VectorKind.Scalar
            && (col.IsKey || col.ItemType is NumberDataViewType && NumberTypes.Contains(col.ItemType.RawType));
        if (!ok)
            throw new ArgumentOutOfRangeException(nameof(shape),
                $"Label column '{name}' has type {col.ItemType}{(col.Kind == SchemaShape.Column.VectorKind.Scalar ? "" : " vector")}; {Expected}.");
    }

    /// <summary>
    /// A reader of the class index of the current row of <paramref name="row"/>: 0..<paramref name="numClasses"/> - 1, or
    /// <paramref name="numClasses"/> (the null label) for a missing key. <paramref name="rowIndex"/> names the row in errors.
    /// </summary>
    public static Func<long> Reader(DataViewRow row, DataViewSchema.Column column, int numClasses, Func<long> rowIndex)
    {
        string name = column.Name;
        if (column.Type is KeyDataViewType)
        {
            var raw = RawReader(row, column);
            return () =>
            {
                ulong k = (ulong)raw();
                if (k == 0) return numClasses;                     // the missing key: no class
                if (k > (ulong)numClasses)
                    throw new ArgumentOutOfRangeException(name,
                        $"Label column '{name}', row {rowIndex()}: key {k} is outside the model's classes (keys 1..{numClasses}, i.e. classes 0..{numClasses - 1}).");
                return (long)k - 1;
            };
        }
        var value = RawReader(row, column);
        return () =>
        {
            double v = value();
            if (double.IsNaN(v) || v != Math.Floor(v) || v < 0 || v >= numClasses)
                throw new ArgumentOutOfRangeException(name,
                    $"Label column '{name}', row {rowIndex()}: label {v} is outside the model's classes; expected an integer in 0..{numClasses - 1}.");
            return (long)v;
        };
    }

    /// <summary>The value of a number or key column as a double (keys as their raw value; exact for |v| &lt; 2^53).</summary>
    private static Func<double> RawReader(DataViewRow row, DataViewSchema.Column column)
    {
        Type raw = column.Type.RawType;
        if (raw == typeof(byte)) return Read<byte>(row, column, v => v);
        if (raw == typeof(sbyte)) return Read<sbyte>(row, column, v => v);
        if (raw == typeof(short)) return Read<short>(row, column, v => v);
        if (raw == typeof(ushort)) return Read<ushort>(row, column, v => v);
        if (raw == typeof(int)) return Read<int>(row, column, v => v);
        if (raw == typeof(uint)) return Read<uint>(row, column, v => v);
        if (raw == typeof(long)) return Read<long>(row, column, v => v);
        if (raw == typeof(ulong)) return Read<ulong>(row, column, v => v);
        if (raw == typeof(float)) return Read<float>(row, column, v => v);
        if (raw == typeof(double)) return Read<double>(row, column, v => v);
        throw new ArgumentOutOfRangeException(nameof(column), $"Label column '{column.Name}' has type {column.Type}; {Expected}.");
    }

    private static Func<double> Read<T>(DataViewRow row, DataViewSchema.Column column, Func<T, double> toDouble)
    {
        var getter = row.GetGetter<T>(column);
        T value = default!;
        return () =>
        {
            getter(ref value);
            return toDouble(value);
        };
    }
}
