"""Packed batches on CUDA (`-m gpu`): the varlen attention's flash path (FlashAttention-2's varlen kernel through
`torch.ops.aten._flash_attention_forward`) against the right-padded batch under SDPA, in bf16 and fp16, and the
per-sequence fallback that fp32 takes. The CPU tests (tests/test_packing.py) check exactness in float64; here
the low-precision paths are compared with a float64 CPU copy of the same weights: the packed result's error
must not exceed the padded one's by much. GQA as in the 7B shape (query heads a multiple of KV heads).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import small_qwen
from test_packing import counted_varlen_calls, uneven

from endo_rl.core import varlen
from endo_rl.core.batch import pack
from endo_rl.reward.reference import reference_forward
from endo_rl.rl.policy import PolicyModel

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
PAD = 0
HALF = [torch.bfloat16, torch.float16]


def qwen(dtype: torch.dtype, device: str, seed: int = 0):
    """A random Qwen2 with head size 64 and 4 query heads per KV head (the flash kernel's usual shapes), drawn in
    float64 and cast, so every dtype's copy holds the same weights."""
    model = small_qwen(torch.float64, seed, hidden=512, heads=8, intermediate=1024, head_std=0.2)
    return model.to(device=device, dtype=dtype)


def error(x: torch.Tensor, truth: torch.Tensor) -> float:
    return float((x.double().cpu() - truth).abs().max())


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
def test_flash_varlen_reference_is_as_close_to_float64_as_the_padded_pass(dtype):
    prompts, responses = uneven()
    truth = reference_forward(qwen(torch.float64, "cpu"), pack(prompts, responses, PAD), 1.0)
    model = qwen(dtype, "cuda")
    padded = reference_forward(model, pack(prompts, responses, PAD).to("cuda"), 1.0)
    with counted_varlen_calls() as calls, varlen.varlen_attention(model):
        packed = reference_forward(model, pack(prompts, responses, PAD, "packed").to("cuda"), 1.0)
    assert calls and all(c["mask"] is None and c["flash"] for c in calls)
    for name in ("logprobs_BL", "token_rewards_BL", "final_lse_B"):
        want = getattr(truth, name)
        got_error, padded_error = error(getattr(packed, name), want), error(getattr(padded, name), want)
        assert got_error <= 2 * padded_error + 1e-2, (name, got_error, padded_error)


@pytest.mark.parametrize("repeat_kv", [False, True], ids=["gqa", "repeated-kv"])
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
def test_flash_varlen_gradients_are_as_close_to_float64_as_the_padded_ones(
    dtype, checkpointing, repeat_kv, monkeypatch
):
    monkeypatch.setattr(varlen, "REPEAT_KV_FOR_FLASH", repeat_kv)
    prompts, responses = uneven()

    def grads(model, batch, device):
        policy = PolicyModel(model, value_head=False)
        if checkpointing:
            policy.gradient_checkpointing_enable({"use_reentrant": False})
            policy.train()
        batch = batch.to(device)
        with varlen.varlen_attention(policy) if batch.packed else contextlib.nullcontext():
            out = policy(**vars(batch))
            out["logprobs_BL"].sum().backward()
        grads = [p.grad.double().flatten().cpu() for p in policy.parameters()]
        return out["logprobs_BL"].detach(), torch.cat(grads)

    want_lp, want_g = grads(qwen(torch.float64, "cpu"), pack(prompts, responses, PAD), "cpu")
    pad_lp, pad_g = grads(qwen(dtype, "cuda"), pack(prompts, responses, PAD), "cuda")
    got_lp, got_g = grads(qwen(dtype, "cuda"), pack(prompts, responses, PAD, "packed"), "cuda")
    assert error(got_lp, want_lp) <= 2 * error(pad_lp, want_lp) + 1e-2
    got_rel, pad_rel = (float((g - want_g).norm() / want_g.norm()) for g in (got_g, pad_g))
    assert got_rel <= 2 * pad_rel + 1e-3, (got_rel, pad_rel)


def test_fp32_on_cuda_takes_the_per_sequence_path_and_equals_padded():
    prompts, responses = uneven()
    model = qwen(torch.float32, "cuda")
    padded = reference_forward(model, pack(prompts, responses, PAD).to("cuda"), 1.0)
    with counted_varlen_calls() as calls, varlen.varlen_attention(model):
        packed = reference_forward(model, pack(prompts, responses, PAD, "packed").to("cuda"), 1.0)
    assert calls and not any(c["flash"] for c in calls)
    torch.testing.assert_close(packed.logprobs_BL, padded.logprobs_BL, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(packed.final_lse_B, padded.final_lse_B, rtol=1e-4, atol=1e-4)
