"""A training step's metrics, averaged over all processes: reward per source, KL, entropy, lengths, losses.

    reward/total        sum of the reward sources per response (KL penalty not included)
    reward/<source>     endogenous (unweighted sum of r_h), correctness (share correct), length_penalty
    reward/kl_penalty   what kl_mode=reward took from the reward per response (-kl_coef * sum k1)
    kl, entropy         per token, of the policy that sampled the rollout, against the reference
    loss, policy_loss, value_loss, kl_loss, clip_fraction, value_clip_fraction, grad_norm
                        the step's globally normalized values (mean over ppo_epochs)

Sequence metrics are means over all sequences of the step, token metrics means over all its tokens. `reduce`
sums a float64 vector over processes (identity for one process).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from endo_rl.rl.rollout import Rollout

Reduce = Callable[[torch.Tensor], torch.Tensor]


def rollout_metrics(rollout: Rollout, reduce: Reduce) -> tuple[dict[str, float], float]:
    """Sequence means over all processes -> (metrics, global token count). Reward metrics are the parts
    `rewards.compose_rewards` returned (`rollout.reward_parts_B`), not recomputed here."""
    lengths_B = rollout.mask_BL.sum(-1).double()
    parts = rollout.reward_parts_B
    per_seq = {f"reward/{name}": parts[name].double() for name in ("total", "endogenous", "kl_penalty")}
    per_seq.update(response_length=lengths_B, truncation_rate=rollout.truncated_B.double())
    for name in ("correctness", "length_penalty"):
        if name in parts:
            per_seq[f"reward/{name}"] = parts[name].double()
    local = [float(v.sum()) for v in per_seq.values()] + [float(lengths_B.sum()), float(lengths_B.numel())]
    total = reduce(torch.tensor(local, dtype=torch.float64)).tolist()
    n_tokens, n_seqs = total[-2], total[-1]
    return {name: total[i] / n_seqs for i, name in enumerate(per_seq)}, n_tokens


def update_metrics(
    update: dict[str, float], n_tokens: float, world_size: int, reduce: Reduce
) -> dict[str, float]:
    """Loss terms summed over processes (each already divided by the global count); token sums -> means."""
    if not update:
        return {"loss": float("nan")}
    metrics = dict(zip(update, reduce(torch.tensor(list(update.values()), dtype=torch.float64)).tolist()))
    for key in ("kl_sum", "entropy_sum"):
        metrics[key.removesuffix("_sum")] = metrics.pop(key) / n_tokens
    metrics["grad_norm"] /= world_size  # the same synchronized norm on every process
    return metrics
