namespace Microsoft.ML.Diffusion;

/// <summary>One denoising step done.</summary>
/// <param name="Step">Steps done in this batch (1-based).</param>
/// <param name="TotalSteps">Steps per batch.</param>
/// <param name="Timestep">The diffusion timestep just denoised.</param>
/// <param name="BatchIndex">Index of the batch (0-based).</param>
/// <param name="BatchCount">Number of batches, when known (0 when not).</param>
public readonly record struct SamplingProgress(int Step, int TotalSteps, int Timestep, int BatchIndex, int BatchCount);
