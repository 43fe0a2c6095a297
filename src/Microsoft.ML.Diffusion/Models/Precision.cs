namespace Microsoft.ML.Diffusion;

/// <summary>The number format the U-Net computes in.</summary>
public enum Precision
{
    /// <summary>Everything in float32 (default).</summary>
    Fp32 = 0,

    /// <summary>
    /// bfloat16 mixed precision (Micikevicius et al. 2018, "Mixed Precision Training", with bfloat16 as in Kalamkar et al.
    /// 2019): the network's forward (and in training its backward) runs on a bfloat16 copy of the weights, while the
    /// weights that are kept, the optimizer state, the EMA, the loss and the sampler's arithmetic stay float32. bfloat16 has
    /// float32's exponent range, so no loss scaling is needed. Faster on CPUs with AVX-512 BF16 / AMX and on recent GPUs.
    /// </summary>
    Bf16Mixed = 1,
}
