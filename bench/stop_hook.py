"""Stop-token hook for random-init benchmark models: responses end at varied lengths, as a real model's do.

A random-init LM almost never samples a stop token (1 in 152k), so every rollout runs to max_new_tokens and a
benchmark measures only the worst case. This forward hook on the LM head sets each stop token's logit to

    z_stop = log(p * V) + s^2 / 2,     s = the std of that position's logits, p = 1/256 (ENDO_RL_STOP_P)

For near-Gaussian logits of mean 0 and std s, sum_v exp(z_v) ~ V exp(s^2/2), so each stop token is sampled
with probability ~p per step: response lengths are roughly geometric (mean ~ 1/(p * number of stop tokens)).
Under greedy decoding a stop token is then usually the argmax at once, so greedy evaluations are measured
without the hook (full-length responses: the worst case).

Installed through `ENDO_RL_MODEL_PLUGIN=bench.stop_hook:install` (endo_rl.core.models), never by a recipe.
The policy's LM head is hooked (generation and the policy's log-probs); the reference pass applies the head's
weight directly, so it scores without the hook: KL is not zero at step 0 on the stop tokens.
"""

from __future__ import annotations

import math
import os

import torch

QWEN25_STOP_IDS = (151643, 151645)  # <|endoftext|>, <|im_end|>


def stop_ids() -> list[int]:
    raw = os.environ.get("ENDO_RL_STOP_IDS")
    return [int(x) for x in raw.split(",")] if raw else list(QWEN25_STOP_IDS)


def stop_logit_hook(p: float, ids: list[int]):
    index: dict[torch.device, torch.Tensor] = {}  # made at the first (warm-up) call, not inside a CUDA graph

    def hook(module, inputs, logits_XV: torch.Tensor) -> torch.Tensor:
        if logits_XV.device not in index:
            index[logits_XV.device] = torch.tensor(ids, device=logits_XV.device)
        # the std is reduced in float32 inside the kernel: no float32 copy of the [tokens, V] logits (13 GB for
        # a 7B update micro-batch), and no gradient through it
        s_X1 = logits_XV.detach().std(dim=-1, keepdim=True).float()
        stop_X1 = (math.log(p * logits_XV.shape[-1]) + s_X1.square() / 2).to(logits_XV.dtype)
        return logits_XV.index_copy(
            -1, index[logits_XV.device], stop_X1.expand(*logits_XV.shape[:-1], len(ids))
        )

    return hook


def install(model: torch.nn.Module) -> None:
    """Register the hook on `model`'s LM head (kept by copy.deepcopy, so a reference copy has it too)."""
    p = float(os.environ.get("ENDO_RL_STOP_P", 1 / 256))
    model.get_output_embeddings().register_forward_hook(stop_logit_hook(p, stop_ids()))
