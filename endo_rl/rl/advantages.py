"""Where advantages are computed: one estimator per `algo.name`, looked up in a dict literal.

    ESTIMATORS = {"grpo": group-normalized sequence rewards, broadcast to tokens (no critic),
                  "ppo":  GAE over token rewards against the value head's values (a critic)}

Every estimator has the same signature, `(rewards_BL, values_BL, mask_BL, algo, reduce, final_values_B) ->
(advantages_BL, returns_BL or None)`, where `mask_BL` is the loss mask (a response left out of the loss under
algo.truncation=mask has no True entry, and takes no part in the statistics) and `final_values_B` the value
after each response (nonzero only for responses cut at the token limit under truncation=bootstrap), and says whether it needs a critic (a value head, its values at sampling time and a value
loss). The trainer asks the table and never compares `algo.name` itself, so a new algorithm is one entry here
and a name without an entry is an error, never a silent fallback to another algorithm. The math is in
`algorithms`; this module only wires the config's settings into it.

Shape legend: B sequences on this process, L longest response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from endo_rl.core.config import AlgoConfig
from endo_rl.core.errors import UserError
from endo_rl.rl import algorithms

Reduce = Callable[[torch.Tensor], torch.Tensor]
"""Sums a float64 vector over processes (identity for one process)."""


def estimate_grpo(
    rewards_BL: torch.Tensor,
    values_BL: torch.Tensor | None,
    mask_BL: torch.Tensor,
    algo: AlgoConfig,
    reduce: Reduce,
    final_values_B: torch.Tensor | None = None,
) -> tuple[torch.Tensor, None]:
    """A_i = (R_i - mean_g R) / (std_g R + eps) over each prompt's group, R_i = sum_h r_h, on every token.

    Mean and std over the responses in the loss only (all of them unless truncation=mask left some out).
    """
    valid_B = mask_BL.any(-1)
    adv_B = algorithms.grpo_advantages(
        rewards_BL.sum(-1),
        algo.group_size,
        algo.grpo.scale_rewards,
        valid_B=None if valid_B.all() else valid_B,
    )
    return torch.where(mask_BL, adv_B[:, None], 0.0), None


def estimate_gae(
    rewards_BL: torch.Tensor,
    values_BL: torch.Tensor | None,
    mask_BL: torch.Tensor,
    algo: AlgoConfig,
    reduce: Reduce,
    final_values_B: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(gamma, lambda) per token, bootstrapping with `final_values_B` after each response; optionally
    whitened over the whole step (moments summed over ranks)."""
    p = algo.ppo
    adv_BL, returns_BL = algorithms.gae(rewards_BL, values_BL, mask_BL, p.gamma, p.lam, final_values_B)
    if p.whiten_advantages:
        adv_BL = algorithms.whiten(adv_BL, mask_BL, reduce(algorithms.masked_moments(adv_BL, mask_BL)))
    return adv_BL, returns_BL


@dataclass(frozen=True)
class Estimator:
    advantages: Callable[..., tuple[torch.Tensor, torch.Tensor | None]]
    """(rewards_BL, values_BL or None, mask_BL, algo, reduce, final_values_B) -> (advantages_BL, returns_BL
    or None)."""
    critic: bool
    """Needs a value head: values at sampling time (for GAE) and a value loss in the update."""


ESTIMATORS: dict[str, Estimator] = {
    "grpo": Estimator(estimate_grpo, critic=False),
    "ppo": Estimator(estimate_gae, critic=True),
}


def estimator(name: str) -> Estimator:
    """The estimator of `algo.name`; an unknown name is a UserError listing the valid ones."""
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise UserError(
            f"config key 'algo.name': unknown algorithm {name!r}; valid: {', '.join(sorted(ESTIMATORS))}"
        ) from None
