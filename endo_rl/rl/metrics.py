"""A training step's metrics, averaged over all processes: reward per source, KL, entropy, lengths, losses.

    reward/total        sum of the reward sources per response (KL penalty not included)
    reward/<source>     endogenous (unweighted sum of r_h), correctness (share correct), length_penalty
    reward/kl_penalty   what kl_mode=reward took from the reward per response (-kl_coef * sum k1)
    kl, entropy         per token, of the policy that sampled the rollout (at the sampling temperature), k1
                        against the reference
    truncation_rate     share of responses cut at max_new_tokens; loss_token_fraction: share of the tokens
                        in the loss (below 1 when algo.truncation=mask left truncated responses out)
    loss, policy_loss, value_loss, kl_loss, grad_norm
                        each optimizer step's globally normalized values, mean over the step's optimizer steps
    clip_fraction, value_clip_fraction
                        share of the loss tokens where the clip was active (a token share under both
                        loss_agg settings), mean over the step's optimizer steps

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
    per_token = {"loss_token_fraction": rollout.loss_mask_BL.sum(-1).double()}
    if rollout.old_logprobs_BL is not None:  # the rollout-time pass: exactly the sampling policy
        k1_BL = rollout.old_logprobs_BL.double() - rollout.ref_logprobs_BL.double()
        per_token["kl"] = torch.where(rollout.mask_BL, k1_BL, 0.0).sum(-1)
        per_token["entropy"] = torch.where(rollout.mask_BL, rollout.old_entropy_BL.double(), 0.0).sum(-1)
    for name in ("correctness", "length_penalty"):
        if name in parts:
            per_seq[f"reward/{name}"] = parts[name].double()
    sums = [float(v.sum()) for v in (*per_seq.values(), *per_token.values())]
    total = reduce(
        torch.tensor([*sums, float(lengths_B.sum()), float(lengths_B.numel())], dtype=torch.float64)
    )
    n_tokens, n_seqs = total[-2].item(), total[-1].item()
    metrics = {name: total[i].item() / n_seqs for i, name in enumerate(per_seq)}
    metrics.update({name: total[len(per_seq) + i].item() / n_tokens for i, name in enumerate(per_token)})
    return metrics, n_tokens


def update_metrics(
    update: dict[str, float], n_tokens: float, world_size: int, reduce: Reduce
) -> dict[str, float]:
    """Loss terms summed over processes (each already divided by the global count); token sums -> means."""
    if not update:
        return {"loss": float("nan")}
    metrics = dict(zip(update, reduce(torch.tensor(list(update.values()), dtype=torch.float64)).tolist()))
    for key in ("kl_sum", "entropy_sum"):  # present when the update's forward was the sampling policy
        if key in metrics:
            metrics[key.removesuffix("_sum")] = metrics.pop(key) / n_tokens
    metrics["grad_norm"] /= world_size  # the same synchronized norm on every process
    return metrics
