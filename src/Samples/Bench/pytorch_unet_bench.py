#!/usr/bin/env python3
"""PyTorch reference for the samples' `bench` command.

The same 28x28 U-Net as src/Microsoft.ML.Diffusion/Models (1x28x28, base 32 channels, multipliers 1,2,2, two residual
blocks per level down and three up, GroupNorm 8, one-head self-attention at 7x7; 1,623,169 parameters), the same
training step as DiffusionTrainingLoop (t ~ U{0..999}, eps ~ N(0, I), x_t by DDPM eq. 4 on the linear schedule, MSE to
eps, AdamW lr 2e-4 / weight decay 1e-6, gradient clipping at norm 1, EMA update with warm-up) and the same denoising
step (network forward + a deterministic DDIM update, eq. 12), at the same batch and thread count.

bf16 mixed precision is done as in the C# library (Precision.Bf16Mixed): a bfloat16 working copy of the network runs
forward and backward, its gradients are handed to the float32 master weights, and AdamW, clipping, EMA and the loss
stay float32; inference runs a bfloat16 copy of the EMA network with float32 sampler arithmetic.

Protocol (so that `bench` can alternate runs with a warm process): the script prints one JSON line describing itself,
then for each line "run" on stdin it measures every figure once and prints one JSON line; "quit" or EOF ends it.
Run it by hand with `--once` to print a single measurement.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

EXPECTED_PARAMETERS = 1_623_169


# ---- the network (mirrors Models/*.cs; field order = module order) ----

def zero_(module):
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TimestepEmbedding(nn.Module):
    """Sinusoidal embedding (Vaswani et al. 2017, 3.5) -> Linear(d, 4d) -> SiLU -> Linear(4d, 4d)."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.linear1 = nn.Linear(dim, 4 * dim)
        self.linear2 = nn.Linear(4 * dim, 4 * dim)

    def forward(self, t):
        half = self.dim // 2
        exponent = torch.arange(half, dtype=torch.float32) * (-math.log(10000.0) / half)
        args = t.to(torch.float32).unsqueeze(1) * exponent.exp().unsqueeze(0)
        emb = torch.cat([args.sin(), args.cos()], 1).to(self.linear1.weight.dtype)
        return self.linear2(F.silu(self.linear1(emb)))


class ResBlock(nn.Module):
    def __init__(self, cin, cout, tdim, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_proj = nn.Linear(tdim, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = zero_(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(temb)).unsqueeze(-1).unsqueeze(-1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    def __init__(self, channels, heads, groups):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels, eps=1e-5)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_(nn.Conv2d(channels, channels, 1))

    def forward(self, x, temb):
        b, c, h, w = x.shape
        d = c // self.heads
        parts = self.qkv(self.norm(x)).reshape(b, 3, self.heads, d, h * w).permute(1, 0, 2, 4, 3)
        q, k, v = parts[0], parts[1], parts[2]
        weights = torch.matmul(q, k.transpose(-1, -2)).mul_(1.0 / math.sqrt(d)).softmax(-1)
        merged = torch.matmul(weights, v).permute(0, 1, 3, 2).reshape(b, c, h, w)
        return x + self.proj(merged)


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x, temb):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, temb):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.Module):
    def __init__(self, res, attention, skip=False):
        super().__init__()
        self.res = res
        self.attention = attention
        self.takes_skip = skip

    def forward(self, x, temb):
        h = self.res(x, temb)
        return h if self.attention is None else self.attention(h, temb)


class UNet(nn.Module):
    def __init__(self, image_size=28, in_channels=1, out_channels=1, base=32, mults=(1, 2, 2), num_res_blocks=2,
                 attention_resolutions=(7,), groups=8, heads=1):
        super().__init__()
        self.time_embedding = TimestepEmbedding(base)
        tdim = 4 * base
        self.input_conv = nn.Conv2d(in_channels, base, 3, padding=1)
        res = image_size
        skips = [base]
        ch = base
        down = []
        for level, m in enumerate(mults):
            out = base * m
            for _ in range(num_res_blocks):
                down.append(Stage(ResBlock(ch, out, tdim, groups),
                                  AttentionBlock(out, heads, groups) if res in attention_resolutions else None))
                ch = out
                skips.append(ch)
            if level < len(mults) - 1:
                down.append(Downsample(ch))
                res //= 2
                skips.append(ch)
        self.down = nn.ModuleList(down)
        self.middle = nn.ModuleList([ResBlock(ch, ch, tdim, groups), AttentionBlock(ch, heads, groups), ResBlock(ch, ch, tdim, groups)])
        up = []
        for level in reversed(range(len(mults))):
            out = base * mults[level]
            for _ in range(num_res_blocks + 1):
                up.append(Stage(ResBlock(ch + skips.pop(), out, tdim, groups),
                                AttentionBlock(out, heads, groups) if res in attention_resolutions else None, skip=True))
                ch = out
            if level > 0:
                up.append(Upsample(ch))
                res *= 2
        self.up = nn.ModuleList(up)
        self.output_norm = nn.GroupNorm(groups, ch, eps=1e-5)
        self.output_conv = zero_(nn.Conv2d(ch, out_channels, 3, padding=1))

    def forward(self, x, t):
        temb = self.time_embedding(t)
        h = self.input_conv(x)
        skips = [h]
        for block in self.down:
            h = block(h, temb)
            skips.append(h)
        for block in self.middle:
            h = block(h, temb)
        for block in self.up:
            if getattr(block, "takes_skip", False):
                h = torch.cat([h, skips.pop()], 1)
            h = block(h, temb)
        return self.output_conv(F.silu(self.output_norm(h)))


# ---- the training and sampling steps (mirror DiffusionTrainingLoop and DdimScheduler) ----

class Trainer:
    def __init__(self, model, ema, alpha_bar, bf16=False):
        self.model, self.ema, self.alpha_bar = model, ema, alpha_bar
        self.params = list(model.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=2e-4, weight_decay=1e-6)
        self.updates = 0
        self.work = None
        if bf16:
            self.work = UNet().to(torch.bfloat16)
            self.work_params = list(self.work.parameters())

    def forward(self, x, t):
        if self.work is None:
            return self.model(x, t)
        return self.work(x.to(torch.bfloat16), t).to(torch.float32)

    def step(self, x0):
        self.model.train()
        if self.work is not None:
            self.work.train()
            with torch.no_grad():
                for w, p in zip(self.work_params, self.params):
                    w.copy_(p)
        b = x0.shape[0]
        t = torch.randint(0, 1000, (b,), dtype=torch.int64)
        eps = torch.randn_like(x0)
        abar = self.alpha_bar[t].view(b, 1, 1, 1)
        xt = abar.sqrt() * x0 + (1 - abar).sqrt() * eps                      # DDPM eq. 4
        loss = F.mse_loss(self.forward(xt, t), eps)                          # eq. 14, float32
        value = loss.item()
        self.opt.zero_grad()
        loss.backward()
        if self.work is not None:
            with torch.no_grad():
                for w, p in zip(self.work_params, self.params):
                    if p.grad is None:
                        p.grad = w.grad.to(torch.float32)
                    else:
                        p.grad.copy_(w.grad)
                    w.grad.zero_()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        d = min(0.995, (1.0 + self.updates) / (10.0 + self.updates))
        with torch.no_grad():
            for s, p in zip(self.ema.parameters(), self.params):
                s.mul_(d).add_(p.detach(), alpha=1 - d)
        self.updates += 1
        return value


def ddim_step(eps, x, abar_t, abar_prev):
    """DDIM eq. 12 with eta = 0, x_0 clipped to [-1, 1] and eps re-derived from it (as the C# DdimScheduler)."""
    x0 = ((x - math.sqrt(1 - abar_t) * eps) / math.sqrt(abar_t)).clamp(-1, 1)
    eps = (x - math.sqrt(abar_t) * x0) / math.sqrt(1 - abar_t)
    return math.sqrt(abar_prev) * x0 + math.sqrt(1 - abar_prev) * eps


def rate(fn, work_per_call, iterations, warmup=1):
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    return work_per_call * iterations / (time.perf_counter() - start)


def onednn_isa():
    """The ISA oneDNN picks in this build (from DNNL_VERBOSE of a child process), or None."""
    import subprocess
    code = "import torch; torch.set_num_threads(1); torch.nn.functional.conv2d(torch.randn(8,64,28,28), torch.randn(64,64,3,3))"
    try:
        out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, DNNL_VERBOSE="1", ONEDNN_VERBOSE="1"),
                             capture_output=True, text=True, timeout=120).stdout
    except Exception:
        return None
    for line in out.splitlines():
        if "isa:" in line:
            return line.split("isa:", 1)[1].strip()
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--once", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)

    model, ema = UNet(), UNet()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == EXPECTED_PARAMETERS, f"the PyTorch U-Net has {n_params} parameters; the C# one has {EXPECTED_PARAMETERS}"
    ema.load_state_dict(model.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    ema.eval()
    bmodel = UNet()
    bmodel.load_state_dict(model.state_dict())
    bema = UNet()
    bema.load_state_dict(model.state_dict())
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0).to(torch.float32)
    trainer = Trainer(model, ema, alpha_bar)
    trainer16 = Trainer(bmodel, bema, alpha_bar, bf16=True)
    ema16 = UNet().to(torch.bfloat16).eval()
    ema16.load_state_dict(ema.state_dict())
    b = args.batch_size
    x0 = torch.rand(b, 1, 28, 28) * 2 - 1
    t_step = torch.full((b,), 500, dtype=torch.int64)
    abar_t, abar_prev = alpha_bar[500].item(), alpha_bar[480].item()

    def step32():
        with torch.no_grad():
            ddim_step(ema(x0, t_step), x0, abar_t, abar_prev)

    x0_b1, t_b1 = x0[:1].contiguous(), t_step[:1].contiguous()

    def step32_b1():
        with torch.no_grad():
            ddim_step(ema(x0_b1, t_b1), x0_b1, abar_t, abar_prev)

    def step16():
        with torch.no_grad():
            ddim_step(ema16(x0.to(torch.bfloat16), t_step).to(torch.float32), x0, abar_t, abar_prev)

    n = 2048
    a32, b32 = torch.randn(n, n), torch.randn(n, n)
    a16, b16 = a32.to(torch.bfloat16), b32.to(torch.bfloat16)
    # Batch 16 keeps input and output below glibc's largest mmap threshold (32 MiB), as in the C# bench (ConvBatch).
    conv_x, conv_w = torch.randn(16, 128, 56, 56), torch.randn(128, 128, 3, 3)
    conv_flop = 2.0 * 16 * 56 * 56 * 128 * 128 * 9

    def conv():
        with torch.no_grad():
            F.conv2d(conv_x, conv_w, padding=1)

    def measure():
        it = args.iterations
        return {
            "train_img_per_s": rate(lambda: trainer.step(x0), b, it),
            "train_bf16_img_per_s": rate(lambda: trainer16.step(x0), b, it),
            "step_img_per_s": rate(step32, b, it),
            "step_bf16_img_per_s": rate(step16, b, it),
            # One image per call (what a PredictionEngine does): 8x the iterations, as the C# side.
            "step_b1_img_per_s": rate(step32_b1, 1, 8 * it),
            "matmul_gflops_per_s": rate(lambda: torch.mm(a32, b32), 2.0 * n ** 3 / 1e9, 3 * it),
            "conv_gflops_per_s": rate(conv, conv_flop / 1e9, it),
            "matmul_bf16_gflops_per_s": rate(lambda: torch.mm(a16, b16), 2.0 * n ** 3 / 1e9, 3 * it),
        }

    info = {
        "torch_version": torch.__version__,
        "parameters": n_params,
        "threads": torch.get_num_threads(),
        "aten_cpu_capability": next((l.split(":", 1)[1].strip() for l in torch.__config__.show().splitlines()
                                     if "CPU capability usage" in l), None),
        "onednn_isa": onednn_isa(),
        "blas": torch.__config__.show().split("BLAS_INFO=", 1)[1].split(",", 1)[0] if "BLAS_INFO=" in torch.__config__.show() else None,
    }
    print(json.dumps(info), flush=True)
    if args.once:
        print(json.dumps(measure()), flush=True)
        return
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "run":
            print(json.dumps(measure()), flush=True)
        elif cmd in ("quit", ""):
            break


if __name__ == "__main__":
    main()
