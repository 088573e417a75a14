"""`deterministic=true`: deterministic kernels, so a rerun with the same seed repeats on a GPU; slower.

Seeding alone does not make CUDA runs repeat. Measured on one H200 (7B-shaped random model, LoRA, the 7B
recipes under `accelerate launch`): two runs with the same seed sampled different rollouts from step 1. With
only the environment variables TORCHINDUCTOR_DETERMINISTIC=1 and CUBLAS_WORKSPACE_CONFIG=:4096:8 the PPO
recipe's two runs were identical at step 1 (the decode repeated) and diverged from step 2: the backward pass
was still nondeterministic (atomics in the attention backward, index/scatter backward ops).
`make_deterministic` adds the torch switches that cover the backward too. With the full switch, on a 2 x H200
host (BENCHMARKS.md 7.3b), no op raised, two 7B-shape runs of each recipe repeated step for step, and a tiny
model's SIGKILLed-and-resumed run ended bitwise equal to the uninterrupted one. On CPU (deterministic anyway)
it is tested to set the flags and to leave training unchanged.

Strict, as transformers' `enable_full_determinism`: `torch.use_deterministic_algorithms(True)` without
`warn_only`. With `warn_only=True` the flash and memory-efficient attention backwards only warn and stay
nondeterministic (torch's attention_backward.cu takes the deterministic path only when not warn-only), and
they are the likeliest cause of the step-2 divergence above. The price: an op with no deterministic CUDA
kernel stops the run with torch's RuntimeError naming the op (such an op must then be replaced, as
`decode_attention.distinct_rows` avoids scatter_reduce). Known: nucleus sampling (`top_p < 1`, ours and
transformers') takes a floating-point cumsum, which torch refuses on CUDA in this mode; the recipes use
top_p = 1, which skips it.

Cost: slower steps. Inductor compiles the static decoder without on-device benchmarking/autotuning (it picks
kernels by heuristics); the attention backwards run their deterministic variants; index/scatter backwards
sort instead of using atomics; cuBLAS runs with its deterministic workspace setting (step times: BENCHMARKS.md
7.3c). New memory is not filled: torch's `fill_uninitialized_memory` (on by default in this mode, a write of every
new tensor) guards only against reading uninitialized bytes, which nothing here does (caches start zeroed), and
it is switched off. Off by default; turn it on for exact comparisons (kill-and-resume against an
uninterrupted run, A/B of a code change), not for throughput.
"""

from __future__ import annotations

import os

import torch

CUBLAS_WORKSPACE = ":4096:8"
"""cuBLAS's deterministic workspace setting (PyTorch's reproducibility notes: ':4096:8' or ':16:8')."""


def make_deterministic() -> None:
    """Make this process's CUDA numerics repeat from run to run; call once, before any CUDA work.

    CUBLAS_WORKSPACE_CONFIG is read when the first cuBLAS handle is created (the first matmul on a GPU), so it
    must be set before then; a value the user already exported is kept. An op without a deterministic CUDA
    kernel raises (strict mode: see the module docstring). All of this is process-global state.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    inductor = _inductor_config()
    if inductor is not None and hasattr(inductor, "deterministic"):  # torch >= 2.6 has the flag
        inductor.deterministic = True
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # see the module docstring
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _inductor_config():
    """torch._inductor.config, or None where this torch build has no inductor."""
    try:
        import torch._inductor.config as inductor_config
    except ImportError:
        return None
    return inductor_config
