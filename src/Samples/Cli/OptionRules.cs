using System.CommandLine;

namespace Microsoft.ML.Diffusion.Samples.Cli;

/// <summary>
/// Validators that make System.CommandLine reject a bad option value while parsing (before any model is loaded), with a
/// message that names the option and what it expects.
/// </summary>
public static class OptionRules
{
    /// <summary>Rejects values below <paramref name="minimum"/>.</summary>
    public static Option<T> AtLeast<T>(this Option<T> option, T minimum) where T : struct, IComparable<T>
    {
        option.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<T>();
            if (value.CompareTo(minimum) < 0) result.AddError($"{option.Name} is {value}; expected a value >= {minimum}.");
        });
        return option;
    }

    /// <summary>Rejects values below <paramref name="minimum"/> (no value passes).</summary>
    public static Option<T?> AtLeast<T>(this Option<T?> option, T minimum) where T : struct, IComparable<T>
    {
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<T?>() is T value && value.CompareTo(minimum) < 0)
                result.AddError($"{option.Name} is {value}; expected a value >= {minimum}.");
        });
        return option;
    }

    /// <summary>Rejects values outside [<paramref name="minimum"/>, <paramref name="maximum"/>] (NaN included).</summary>
    public static Option<float> Between(this Option<float> option, float minimum, float maximum, string meaning)
    {
        option.Validators.Add(result =>
        {
            float value = result.GetValueOrDefault<float>();
            if (!(value >= minimum && value <= maximum))
                result.AddError($"{option.Name} is {value.ToString(System.Globalization.CultureInfo.InvariantCulture)}; expected a number in [{minimum}, {maximum}] ({meaning}).");
        });
        return option;
    }

    /// <summary>Accepts only one of <paramref name="names"/> (like AcceptOnlyFromAmong, with a one-line message naming the option).</summary>
    public static Option<string> OneOf(this Option<string> option, params string[] names)
    {
        option.CompletionSources.Add(names);
        option.Validators.Add(result =>
        {
            string? value = result.GetValueOrDefault<string>();
            if (value is not null && !names.Contains(value))
                result.AddError($"{option.Name} '{value}' is not recognised; expected one of {string.Join(", ", names)}.");
        });
        return option;
    }

    /// <summary>Accepts only one of <paramref name="values"/>.</summary>
    public static Option<int> OneOf(this Option<int> option, params int[] values)
    {
        option.CompletionSources.Add(values.Select(v => v.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray());
        option.Validators.Add(result =>
        {
            int value = result.GetValueOrDefault<int>();
            if (!values.Contains(value)) result.AddError($"{option.Name} is {value}; expected one of {string.Join(", ", values)}.");
        });
        return option;
    }
}
