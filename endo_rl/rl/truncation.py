"""What a response cut at `generation.max_new_tokens` means for the update (`algo.truncation`).

A response that hit the token limit without a stop token did not end; the episode was cut by a time limit. The
endogenous reward of its last token is r_H = alpha * (z_H[a_H] - logsumexp(z_{H+1})), and the return continues
after it. Three treatments:

    terminal   as if it had ended: logsumexp(z_{H+1}) := 0 and the value after it := 0 (the paper's convention,
               and verl's, OpenRLHF's and TRL's default). Its sequence reward is alpha * (log pi_ref(y_1..H | x)
               + logsumexp(z_1)), never below that of any finished continuation of the same prefix: the
               unwritten rest is scored as if it had probability 1, so running out of budget is never penalized.
    bootstrap  a time limit, not a terminal state (Pardo et al. 2018, "Time limits in RL"): the last token gets its
               full reward with logsumexp(z_{H+1}) from the same reference forward, and GAE continues with the
               critic's V(s_{H+1}) (the value head at the last response token). Needs a critic: ppo.
    mask       truncated responses are left out of the loss (DAPO's overlong filtering, Yu et al. 2025) and out
               of GRPO's group mean/std (a group with fewer than 2 finished responses gets no gradient).

Default `auto`: bootstrap when the algorithm has a critic, mask when it has none. Without a critic nothing can
estimate the return after the cut, and `terminal` would hand truncated responses the bias above, so they are
left out; with a critic the textbook time-limit treatment keeps their tokens in the loss. Log `truncation_rate`:
under mask, a run whose responses are nearly all truncated trains on nearly nothing.

Shape legend: B sequences, L longest response.
"""

from __future__ import annotations

import torch

from endo_rl.core.errors import UserError

MODES = ("terminal", "bootstrap", "mask")


def resolve(mode: str, critic: bool) -> str:
    """`algo.truncation` for an algorithm with or without a critic: auto -> bootstrap | mask."""
    if mode == "auto":
        return "bootstrap" if critic else "mask"
    if mode not in MODES:
        raise UserError(f"config key 'algo.truncation': expected auto, {', '.join(MODES)}; got {mode!r}")
    if mode == "bootstrap" and not critic:
        raise UserError(
            "config key 'algo.truncation': bootstrap continues the return past the cut with a critic's value, "
            "and this algorithm has none (use algo.name=ppo, or truncation mask / terminal)"
        )
    return mode


def loss_mask(mask_BL: torch.Tensor, truncated_B: torch.Tensor, mode: str) -> torch.Tensor:
    """The tokens the loss sees: all response tokens, or (mask) those of the responses that ended."""
    if mode == "mask":
        return mask_BL & ~truncated_B.to(mask_BL.device)[:, None]
    return mask_BL
