"""Composing the training reward from its sources: ONE pure function, returning the total and its parts.

    r_h = w_endo * r^endo_h                          (level=token: dense, the inverse soft Bellman reward)
        | w_endo * sum_h r^endo_h at the last token  (level=sequence)
        + [h = last] * (w_correct * correct - w_len * length / max_new_tokens)
        - kl_coef * (logp_h - ref_logp_h)            (KL in the reward, algo.kl_mode=reward; k1 estimator)

Correctness and the length penalty are the paper's remedy for "triviality bias" (sec. 6: the endogenous reward
alone can be raised by writing less or blander text). `compose_rewards` returns each source per sequence, so the
step's metrics read them instead of recomputing them. GRPO uses the sum over a response of these token rewards
as its sequence reward, so for GRPO the endogenous `level` makes no difference.

Shape legend: B batch, L response length (response layout, mask a contiguous prefix per row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from endo_rl.rl import algorithms


@dataclass(frozen=True)
class RewardWeights:
    """The scalars of the composition (the trainer builds them from `reward.*` and `algo.kl_*`)."""

    endogenous: float
    """Weight of the endogenous reward."""
    level: Literal["token", "sequence"]
    """Endogenous reward per token, or its sum at the last token."""
    correctness: float
    """Reward per correct response (needs `correct_B`)."""
    length_penalty: float
    """Subtract `length_penalty * tokens / max_new_tokens` per response (0: off, and no metric)."""
    max_new_tokens: int
    """The response length limit the length penalty is relative to."""
    kl_coef: float
    """Coefficient of the k1 KL penalty in the reward (0: KL not in the reward)."""


def at_last_token(rewards_B: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
    """A per-sequence reward placed on each row's last response token."""
    last_B = mask_BL.sum(-1) - 1
    out_BL = torch.zeros(mask_BL.shape, dtype=rewards_B.dtype, device=rewards_B.device)
    out_BL[torch.arange(mask_BL.shape[0], device=mask_BL.device), last_B] = rewards_B
    return out_BL


def length_penalty(lengths_B: torch.Tensor, max_new_tokens: int, weight: float) -> torch.Tensor:
    """-weight * length / max_new_tokens: 0 for an empty response, -weight for a truncated one."""
    return -weight * lengths_B.to(torch.float32) / max_new_tokens


def compose_rewards(
    weights: RewardWeights,
    mask_BL: torch.Tensor,
    endogenous_BL: torch.Tensor,
    correct_B: torch.Tensor | None = None,
    logprobs_BL: torch.Tensor | None = None,
    ref_logprobs_BL: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total token rewards [B, L] (zero outside the mask) and the parts per sequence [B]:

    total           sum of the reward sources per response, the KL penalty NOT included (the task reward)
    endogenous      unweighted sum of r^endo_h
    correctness     share correct (0/1 per response; only when `correct_B` is given)
    length_penalty  -w_len * length / max_new_tokens (only when its weight is > 0)
    kl_penalty      -kl_coef * sum_h k1_h, what the KL took from the reward (0 when kl_coef is 0)

    `logprobs_BL` (the sampling policy's) and `ref_logprobs_BL` are needed when kl_coef > 0.
    """
    w = weights
    if w.level not in ("token", "sequence"):
        raise ValueError(f"unknown reward level {w.level!r}; expected 'token' or 'sequence'")
    if w.correctness > 0 and correct_B is None:
        raise ValueError("a correctness weight > 0 needs the correctness of each response (correct_B)")
    endogenous_BL = torch.where(mask_BL, endogenous_BL, 0.0)
    parts = {"endogenous": endogenous_BL.sum(-1)}
    sequence_B = torch.zeros(mask_BL.shape[0])
    if correct_B is not None:
        parts["correctness"] = correct_B.to(torch.float32)
        sequence_B += w.correctness * parts["correctness"]
    if w.length_penalty > 0:
        parts["length_penalty"] = length_penalty(mask_BL.sum(-1), w.max_new_tokens, w.length_penalty)
        sequence_B += parts["length_penalty"]
    weighted_BL = endogenous_BL * w.endogenous
    if w.level == "sequence":
        weighted_BL = at_last_token(weighted_BL.sum(-1), mask_BL)
    task_BL = weighted_BL + at_last_token(sequence_B.to(weighted_BL.dtype), mask_BL)
    parts["total"] = task_BL.sum(-1)
    if w.kl_coef > 0:
        k1_BL = algorithms.kl_penalty(logprobs_BL, ref_logprobs_BL, "k1")
        penalty_BL = w.kl_coef * torch.where(mask_BL, k1_BL, 0.0)
        parts["kl_penalty"] = -penalty_BL.sum(-1)
        return task_BL - penalty_BL, parts
    parts["kl_penalty"] = torch.zeros(mask_BL.shape[0])
    return task_BL, parts
