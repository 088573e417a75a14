"""Composing the training reward from its sources, as pure tensor functions.

    r_h = w_endo * r^endo_h                       (level=token: dense, the inverse soft Bellman reward)
        | w_endo * sum_h r^endo_h at the last token  (level=sequence)
        + [h = last] * (w_correct * correct - w_len * length / max_new_tokens)
        - kl_coef * (logp_h - ref_logp_h)         (kl_mode=reward only; k1 estimator)

Correctness and the length penalty are the paper's remedy for "triviality bias" (sec. 6: the endogenous reward
alone can be raised by writing less or blander text). Each source is returned separately for logging.
GRPO uses the sum over a response of these token rewards as its sequence reward, so for GRPO the endogenous
`level` makes no difference.

Shape legend: B batch, L response length (response layout, mask a contiguous prefix per row).
"""

from __future__ import annotations

import torch


def at_last_token(rewards_B: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
    """A per-sequence reward placed on each row's last response token."""
    last_B = mask_BL.sum(-1) - 1
    out_BL = torch.zeros(mask_BL.shape, dtype=rewards_B.dtype, device=rewards_B.device)
    out_BL[torch.arange(mask_BL.shape[0], device=mask_BL.device), last_B] = rewards_B
    return out_BL


def length_penalty(lengths_B: torch.Tensor, max_new_tokens: int, weight: float) -> torch.Tensor:
    """-weight * length / max_new_tokens: 0 for an empty response, -weight for a truncated one."""
    return -weight * lengths_B.to(torch.float32) / max_new_tokens


def token_rewards(
    endogenous_BL: torch.Tensor,
    mask_BL: torch.Tensor,
    endogenous_weight: float,
    level: str,
    sequence_extra_B: torch.Tensor,
) -> torch.Tensor:
    """Endogenous reward (dense or at the last token) plus sequence-level extras at the last token."""
    endogenous_BL = torch.where(mask_BL, endogenous_BL, 0.0) * endogenous_weight
    if level == "sequence":
        endogenous_BL = at_last_token(endogenous_BL.sum(-1), mask_BL)
    elif level != "token":
        raise ValueError(f"unknown reward level {level!r}; expected 'token' or 'sequence'")
    return endogenous_BL + at_last_token(sequence_extra_B.to(endogenous_BL.dtype), mask_BL)
