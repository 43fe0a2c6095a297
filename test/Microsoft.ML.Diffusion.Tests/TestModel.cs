namespace Microsoft.ML.Diffusion.Tests;

/// <summary>
/// What a test class shares (made in its ClassInitialize, disposed in its ClassCleanup): an MLContext(seed: 1), the
/// <see cref="TestData.Squares"/> data, a tiny model trained on it (<see cref="TestData.TinyOptions"/>) and a temporary directory.
/// </summary>
internal sealed class TestModel : IDisposable
{
    /// <summary>The TinyOptions(steps: 2) model on Squares(16) that several classes use unchanged: trained once per test run.</summary>
    private static readonly Lazy<DiffusionModel> SharedModel = new(() =>
    {
        var ml = new MLContext(seed: 1);
        return ml.Generative.Diffusion(TestData.TinyOptions(steps: 2)).Fit(ml.Data.LoadFromEnumerable(TestData.Squares(16).ToList()));
    });

    private readonly bool _ownsModel;

    private TestModel(MLContext ml, IDataView data, DiffusionModel model, bool ownsModel, string directoryPrefix)
    {
        Ml = ml;
        Data = data;
        Model = model;
        _ownsModel = ownsModel;
        Directory = TestData.TempDirectory(directoryPrefix);
    }

    public MLContext Ml { get; }

    /// <summary>The Squares rows the model was trained on.</summary>
    public IDataView Data { get; }

    public DiffusionModel Model { get; }

    /// <summary>A fresh temporary directory, deleted by <see cref="Dispose"/>.</summary>
    public string Directory { get; }

    /// <summary>Trains TinyOptions(<paramref name="steps"/>), changed by <paramref name="configure"/>, on Squares(<paramref name="count"/>).</summary>
    public static TestModel Train(string directoryPrefix, int steps, Action<DiffusionTrainer.Options>? configure = null, int count = 16)
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(TestData.Squares(count).ToList());
        var options = TestData.TinyOptions(steps);
        configure?.Invoke(options);
        return new TestModel(ml, data, ml.Generative.Diffusion(options).Fit(data), ownsModel: true, directoryPrefix);
    }

    /// <summary>The shared TinyOptions(steps: 2) model on Squares(16) (trained on first use, freed at the end of the run).</summary>
    public static TestModel Shared(string directoryPrefix)
    {
        var ml = new MLContext(seed: 1);
        return new TestModel(ml, ml.Data.LoadFromEnumerable(TestData.Squares(16).ToList()), SharedModel.Value, ownsModel: false, directoryPrefix);
    }

    /// <summary>Frees the shared model (AssemblyCleanup).</summary>
    public static void DisposeShared()
    {
        if (SharedModel.IsValueCreated) SharedModel.Value.Dispose();
    }

    /// <summary>Frees the model (unless shared) and deletes the directory.</summary>
    public void Dispose()
    {
        if (_ownsModel) Model.Dispose();
        try { System.IO.Directory.Delete(Directory, recursive: true); } catch (IOException) { }
    }
}
