using static TorchSharp.torch;

namespace Microsoft.ML.Diffusion.Schedulers;

/// <summary>
/// The result of one scheduler step (diffusers' SchedulerOutput): the sample the step lands on and the x_0 the step predicted
/// (after clipping or thresholding, as the update used it). Both are new tensors in the caller's dispose scope, except that
/// <see cref="PredictedX0"/> may be <see cref="PrevSample"/> itself on a step that lands on x_0.
/// </summary>
/// <param name="PrevSample">x_prev, shaped like the sample.</param>
/// <param name="PredictedX0">x0_hat, shaped like the sample.</param>
internal readonly record struct SchedulerOutput(Tensor PrevSample, Tensor PredictedX0);
