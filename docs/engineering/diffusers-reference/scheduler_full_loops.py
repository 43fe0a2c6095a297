"""Reference numbers for the library's scheduler tests, computed with diffusers' own schedulers.

Follows diffusers' scheduler full-loop tests (tests/schedulers/test_schedulers.py and test_scheduler_*.py): linear
betas 1e-4 .. 0.02 over T = 1000, 10 inference steps, their dummy model eps(x, t) = x * t / (t + 1) and their
deterministic dummy sample (arange(768) reshaped to 3x8x8x4 / 768, permuted to 4x3x8x8). Prints, per configuration,
sum(|x|) and mean(|x|) of the final sample, and the timesteps visited.

Stochastic samplers (SDE-DPM-Solver++) take explicit per-step noise through step(variance_noise=...) instead of a
seeded generator, so that a test on another random-number generator can feed the same values:
noise_i[k] = sqrt(2) * sin(0.37 k + 1.1 i + 0.5) for loop position i and flat (row-major) element k.

Run (outside the project; diffusers is not a dependency):
    PYTHONPATH=<diffusers checkout>/src python3 scheduler_full_loops.py > scheduler_full_loops.out
The machine that produced scheduler_full_loops.out had no PyPI access: diffusers v0.40.0 source (git tag v0.40.0) on
Debian's PyTorch 1.13.1, with stand-ins for huggingface_hub and safetensors (imported by diffusers at start-up, never
used by a scheduler) and for torch.xpu / torch.mps attributes that diffusers 0.40 reads at import time.
"""
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import sys
import types

import torch


# ---- stand-ins for modules diffusers imports but the schedulers never call ----
class _Dummy:
    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return _Dummy()

    def __getattr__(self, name):
        return _Dummy()


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # only the packages that are not installed (the real ones are used where present)
    roots = tuple(r for r in ("huggingface_hub", "safetensors") if importlib.util.find_spec(r) is None)

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        m = types.ModuleType(spec.name)
        m.__path__ = []
        m.__version__ = "0.99.0"

        def __getattr__(attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            return "/tmp/hf-stub" if attr.isupper() else type(attr, (_Dummy,), {})

        m.__getattr__ = __getattr__
        return m

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _StubFinder())
for _dev in ("xpu", "mps"):
    if not hasattr(torch, _dev):
        setattr(torch, _dev, types.SimpleNamespace(empty_cache=None, device_count=lambda: 0, is_available=lambda: False,
                                                   manual_seed=None, reset_peak_memory_stats=None,
                                                   max_memory_allocated=None, synchronize=None))

import diffusers  # noqa: E402
from diffusers.schedulers.scheduling_ddim import DDIMScheduler  # noqa: E402
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler  # noqa: E402
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler  # noqa: E402

BASE = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"}
STEPS = 10


def dummy_sample_deter():
    n = 4 * 3 * 8 * 8
    return (torch.arange(n).reshape(3, 8, 8, 4) / n).permute(3, 0, 1, 2)


def dummy_model(sample, t):
    return sample * t / (t + 1)


def step_noise(i, shape):
    k = torch.arange(math.prod(shape), dtype=torch.float64)
    return (math.sqrt(2.0) * torch.sin(0.37 * k + 1.1 * i + 0.5)).to(torch.float32).reshape(shape)


def full_loop(cls, noise=False, **config):
    scheduler = cls(**{**BASE, **config})
    scheduler.set_timesteps(STEPS)
    sample = dummy_sample_deter()
    for i, t in enumerate(scheduler.timesteps):
        residual = dummy_model(sample, t)
        kwargs = {"variance_noise": step_noise(i, sample.shape)} if noise else {}
        if cls is DDIMScheduler:
            kwargs["eta"] = 0.0
        sample = scheduler.step(residual, t, sample, **kwargs).prev_sample
    return {
        "sum": round(torch.sum(torch.abs(sample)).item(), 6),
        "mean": round(torch.mean(torch.abs(sample)).item(), 8),
        "timesteps": [int(t) for t in scheduler.timesteps],
    }


DPM = dict(solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint", timestep_spacing="trailing")
SDE = dict(solver_order=2, algorithm_type="sde-dpmsolver++", solver_type="midpoint", timestep_spacing="trailing")
UNIPC = dict(solver_order=2, solver_type="bh2", predict_x0=True, timestep_spacing="trailing")

CASES = {
    # DDIM (eta 0, leading spacing, clip_sample as in diffusers' DDIM test config).
    # beta_start 0.01 (alpha_bar_0 = 0.99) as in diffusers' set_alpha_to_one tests, so that the final alpha_bar matters.
    "ddim_set_alpha_to_one_false": (DDIMScheduler, False, dict(clip_sample=True, set_alpha_to_one=False, beta_start=0.01)),
    "ddim_set_alpha_to_one_true": (DDIMScheduler, False, dict(clip_sample=True, set_alpha_to_one=True, beta_start=0.01)),
    "ddim_default_betas_set_alpha_to_one_false": (DDIMScheduler, False, dict(clip_sample=True, set_alpha_to_one=False)),
    # DPM-Solver++(2M), trailing spacing.
    "dpm_zero_lof": (DPMSolverMultistepScheduler, False, dict(DPM, final_sigmas_type="zero", lower_order_final=True)),
    "dpm_sigma_min_lof": (DPMSolverMultistepScheduler, False, dict(DPM, final_sigmas_type="sigma_min", lower_order_final=True)),
    "dpm_sigma_min_no_lof": (DPMSolverMultistepScheduler, False, dict(DPM, final_sigmas_type="sigma_min", lower_order_final=False)),
    "dpm_karras_zero": (DPMSolverMultistepScheduler, False, dict(DPM, use_karras_sigmas=True, final_sigmas_type="zero")),
    "dpm_karras_sigma_min_no_lof": (DPMSolverMultistepScheduler, False,
                                    dict(DPM, use_karras_sigmas=True, final_sigmas_type="sigma_min", lower_order_final=False)),
    "dpm_lu_zero": (DPMSolverMultistepScheduler, False, dict(DPM, use_lu_lambdas=True, final_sigmas_type="zero")),
    "dpm_karras_v_prediction": (DPMSolverMultistepScheduler, False,
                                dict(DPM, use_karras_sigmas=True, prediction_type="v_prediction")),
    "dpm_threshold_087_05": (DPMSolverMultistepScheduler, False,
                             dict(DPM, thresholding=True, dynamic_thresholding_ratio=0.87, sample_max_value=0.5,
                                  final_sigmas_type="sigma_min", lower_order_final=False)),
    # SDE-DPM-Solver++(2M) with the explicit noise above.
    "sde_zero_lof": (DPMSolverMultistepScheduler, True, dict(SDE, final_sigmas_type="zero")),
    "sde_sigma_min_no_lof": (DPMSolverMultistepScheduler, True, dict(SDE, final_sigmas_type="sigma_min", lower_order_final=False)),
    "sde_karras_zero": (DPMSolverMultistepScheduler, True, dict(SDE, use_karras_sigmas=True, final_sigmas_type="zero")),
    # UniPC (bh2, order 2, data prediction).
    "unipc_zero_lof": (UniPCMultistepScheduler, False, dict(UNIPC, final_sigmas_type="zero")),
    "unipc_sigma_min_lof": (UniPCMultistepScheduler, False, dict(UNIPC, final_sigmas_type="sigma_min")),
    "unipc_sigma_min_no_lof": (UniPCMultistepScheduler, False, dict(UNIPC, final_sigmas_type="sigma_min", lower_order_final=False)),
    "unipc_karras_zero": (UniPCMultistepScheduler, False, dict(UNIPC, use_karras_sigmas=True, final_sigmas_type="zero")),
    "unipc_karras_v_prediction": (UniPCMultistepScheduler, False,
                                  dict(UNIPC, use_karras_sigmas=True, prediction_type="v_prediction")),
}

# diffusers' own test expectations (tests/schedulers, v0.40.0), recomputed here to show the harness reproduces them.
HARNESS_CHECKS = {
    "diffusers_ddim_no_set_alpha_to_one (149.0784)": (DDIMScheduler, False,
                                                      dict(clip_sample=True, set_alpha_to_one=False, beta_start=0.01)),
    "diffusers_ddim_set_alpha_to_one (149.8295)": (DDIMScheduler, False,
                                                   dict(clip_sample=True, set_alpha_to_one=True, beta_start=0.01)),
    "diffusers_dpm_no_noise (mean 0.3301)": (DPMSolverMultistepScheduler, False,
                                            dict(solver_order=2, final_sigmas_type="sigma_min", lower_order_final=False)),
    "diffusers_dpm_karras_v (mean 0.2096)": (DPMSolverMultistepScheduler, False,
                                            dict(solver_order=2, final_sigmas_type="sigma_min", lower_order_final=False,
                                                 prediction_type="v_prediction", use_karras_sigmas=True)),
    "diffusers_dpm_lu_v (mean 0.1554)": (DPMSolverMultistepScheduler, False,
                                        dict(solver_order=2, final_sigmas_type="sigma_min", lower_order_final=False,
                                             prediction_type="v_prediction", use_lu_lambdas=True)),
    "diffusers_dpm_thres (mean 1.1364)": (DPMSolverMultistepScheduler, False,
                                         dict(solver_order=2, final_sigmas_type="sigma_min", lower_order_final=False,
                                              thresholding=True, dynamic_thresholding_ratio=0.87, sample_max_value=0.5)),
    "diffusers_unipc_no_noise (mean 0.2464)": (UniPCMultistepScheduler, False,
                                              dict(solver_order=2, solver_type="bh2", final_sigmas_type="sigma_min")),
    "diffusers_unipc_karras (mean 0.2925)": (UniPCMultistepScheduler, False,
                                            dict(solver_order=2, solver_type="bh2", final_sigmas_type="sigma_min",
                                                 use_karras_sigmas=True)),
}

if __name__ == "__main__":
    out = {"diffusers": diffusers.__version__, "torch": torch.__version__, "cases": {}, "harness_checks": {}}
    for name, (cls, noise, cfg) in CASES.items():
        out["cases"][name] = {"config": cfg, **full_loop(cls, noise, **cfg)}
    for name, (cls, noise, cfg) in HARNESS_CHECKS.items():
        r = full_loop(cls, noise, **cfg)
        out["harness_checks"][name] = {"sum": r["sum"], "mean": r["mean"]}
    print(json.dumps(out, indent=1))
