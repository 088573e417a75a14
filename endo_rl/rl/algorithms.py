"""PPO and GRPO as pure tensor functions: advantages, KL estimators, clipped losses, loss aggregation.

PPO (Schulman et al. 2017) with GAE (Schulman et al. 2016), per response token h:

    delta_h = r_h + gamma * V_{h+1} - V_h,          V after the last token := 0 (or V(s_{H+1}), see below)
    A_h     = delta_h + gamma * lam * A_{h+1},       G_h (return) = A_h + V_h
    L_pi    = -min(rho_h * A_h, clip(rho_h, 1 - eps, 1 + eps) * A_h),   rho_h = exp(logp_h - old_logp_h)
    L_V     = 1/2 * max((V_h - G_h)^2, (clip(V_h, V_old - c, V_old + c) - G_h)^2)

The paper's setting (Li et al. 2025, arXiv 2506.23235, sec. 5) is PPO with the dense endogenous reward r_h,
gamma = 1 and a KL penalty of 0.01. With gamma = lam = 1 and a zero critic the return-to-go of the endogenous
reward telescopes to alpha * (log pi_ref(y_{>=h} | s_h) + logsumexp(z_h)).

GRPO (Shao et al. 2024, DeepSeekMath): one sequence reward R_i per response, normalized within the group of
responses to the same prompt, A_i = (R_i - mean_g R) / (std_g R + eps), broadcast to every token. `scale=False`
drops the std division (Dr. GRPO, Liu et al. 2025). std is the unbiased sample std, as in TRL.

Truncation: a response cut at generation.max_new_tokens did not end; its return continues past the cut. GAE
then bootstraps with the critic's V(s_{H+1}) instead of 0 (Pardo et al. 2018, "Time limits in RL").

Guards (as verl): the log-ratio logp - old_logp is clamped to +-20 before exp, and the k3 estimator's
d = logp - ref_logp to +-20 and k3 itself to at most 10, so one wild token cannot overflow the loss to
inf/NaN; the clamp also stops that token's gradient.

KL estimators (Schulman, "Approximating KL divergence", 2020), with d = logp - ref_logp on sampled tokens:
k1 = d (unbiased, can be negative; used as the per-token reward penalty, as in InstructGPT/OpenRLHF) and
k3 = exp(-d) + d - 1 (non-negative, low variance; used as the loss term, as in GRPO).

Aggregation: `aggregate` divides by a caller-given denominator -- the token count (token_mean) or sequence count
(seq_mean) of the *whole optimizer step across all ranks* -- so a step computed as one big batch and as
micro-batches with gradient accumulation gives the same loss and gradient. Textbook code averages each
micro-batch and then averages the averages, which weights short micro-batches up.

Shape legend: B batch (sequences), L response length (response layout: column h = response token h, the mask
a contiguous prefix per row), G groups, K group size.
"""

from __future__ import annotations

from typing import Literal

import torch

Aggregation = Literal["token_mean", "seq_mean"]

LOG_RATIO_CLAMP = 20.0
"""|log-ratio| bound before exp, for the policy ratio and k3 (verl's value)."""
K3_CLAMP = 10.0
"""Upper bound of the per-token k3 estimate (verl's value)."""


def masked_sum(x_BL: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
    return torch.where(mask_BL, x_BL, 0.0).sum()


def masked_mean(x_BL: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
    """Mean over the True entries (NaN when there are none, rather than a silent 0)."""
    return masked_sum(x_BL, mask_BL) / mask_BL.sum()


def masked_moments(x_BL: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
    """[count, sum, sum of squares] over the True entries: summable across ranks, then fed to `whiten`."""
    x = torch.where(mask_BL, x_BL, 0.0).double()
    return torch.stack([mask_BL.sum().double(), x.sum(), (x * x).sum()])


def whiten(
    x_BL: torch.Tensor, mask_BL: torch.Tensor, moments: torch.Tensor | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries (biased variance); zero outside the mask.

    `moments` ([count, sum, sum of squares], e.g. summed over ranks) replaces the local statistics.
    """
    count, total, total_sq = (masked_moments(x_BL, mask_BL) if moments is None else moments).tolist()
    mean = total / count
    var = max(total_sq / count - mean * mean, 0.0)
    return torch.where(mask_BL, (x_BL - mean) / (var + eps) ** 0.5, 0.0)


def gae(
    rewards_BL: torch.Tensor,
    values_BL: torch.Tensor,
    mask_BL: torch.Tensor,
    gamma: float,
    lam: float,
    final_values_B: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation per token -> (advantages_BL, returns_BL), zero outside the mask.

    `final_values_B`: the value after each response's last token -- the critic's V(s_{H+1}) for a response cut
    at the token limit, 0 for one that ended; None: 0 for every row (every response ended).
    """
    rewards_BL = torch.where(mask_BL, rewards_BL, 0.0)
    values_BL = torch.where(mask_BL, values_BL, 0.0)
    advantages_BL = torch.zeros_like(rewards_BL)
    next_advantage_B = torch.zeros_like(rewards_BL[:, 0])
    lengths_B = mask_BL.sum(-1)
    final_B = torch.zeros_like(next_advantage_B) if final_values_B is None else final_values_B.to(values_BL)
    for h in reversed(range(rewards_BL.shape[1])):
        # the next value: V_{h+1} inside a row, final_values_B right after its last token
        next_value_B = values_BL[:, h + 1] if h + 1 < values_BL.shape[1] else torch.zeros_like(final_B)
        next_value_B = torch.where(lengths_B == h + 1, final_B, next_value_B)
        delta_B = rewards_BL[:, h] + gamma * next_value_B - values_BL[:, h]
        advantage_B = delta_B + gamma * lam * next_advantage_B
        advantages_BL[:, h] = torch.where(mask_BL[:, h], advantage_B, 0.0)
        next_advantage_B = advantages_BL[:, h]  # past the end of a row it stays 0
    returns_BL = torch.where(mask_BL, advantages_BL + values_BL, 0.0)
    return advantages_BL, returns_BL


def grpo_advantages(
    rewards_B: torch.Tensor,
    group_size: int,
    scale: bool = True,
    eps: float = 1e-6,
    valid_B: torch.Tensor | None = None,
) -> torch.Tensor:
    """Group-normalized sequence advantages; rows [i*K, (i+1)*K) are the K responses to prompt i.

    `valid_B`: only these responses enter their group's mean and std (the others, e.g. truncated responses
    masked out of the loss, get advantage 0); a group with fewer than 2 valid responses gets 0 throughout.
    """
    if group_size < 2 or rewards_B.shape[0] % group_size:
        raise ValueError(
            f"{rewards_B.shape[0]} rewards cannot be split into groups of {group_size} (need >= 2)"
        )
    rewards_GK = rewards_B.view(-1, group_size)
    if valid_B is None:
        mean_G1 = rewards_GK.mean(dim=1, keepdim=True)
        centred_GK = rewards_GK - mean_G1
        if scale:
            centred_GK = _scaled(centred_GK, rewards_GK.std(dim=1, keepdim=True), mean_G1, eps)
        return centred_GK.reshape(-1)
    valid_GK = valid_B.view(-1, group_size)
    n_G1 = valid_GK.sum(dim=1, keepdim=True)
    mean_G1 = torch.where(valid_GK, rewards_GK, 0.0).sum(dim=1, keepdim=True) / n_G1.clamp(min=1)
    centred_GK = torch.where(valid_GK, rewards_GK - mean_G1, 0.0)
    if scale:  # unbiased std over the valid responses, as torch.std
        std_G1 = (centred_GK.square().sum(dim=1, keepdim=True) / (n_G1 - 1).clamp(min=1)).sqrt()
        centred_GK = _scaled(centred_GK, std_G1, mean_G1, eps)
    return torch.where(valid_GK & (n_G1 >= 2), centred_GK, 0.0).reshape(-1)


REWARD_NOISE = 1e-5
"""A group whose reward spread is below this fraction of its mean magnitude (plus 1) has no spread."""


def _scaled(
    centred_GK: torch.Tensor, std_G1: torch.Tensor, mean_G1: torch.Tensor, eps: float
) -> torch.Tensor:
    """Centred rewards / (std + eps); 0 for a group whose std is rounding noise.

    Identical responses can get rewards that differ in their last float32 bits (micro-batches grouped by
    length pad them differently, which changes the order of the sums). Divided by a std of that size, the
    rounding noise would become advantages of order one and train on nothing.
    """
    real_G1 = std_G1 > REWARD_NOISE * (1.0 + mean_G1.abs())
    return torch.where(real_G1, centred_GK / (std_G1 + eps), 0.0)


def kl_penalty(
    logprobs_BL: torch.Tensor, ref_logprobs_BL: torch.Tensor, estimator: Literal["k1", "k3"]
) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) on the sampled tokens: k1 = d, k3 = exp(-d) + d - 1.

    k3 is computed from d clamped to +-20 and capped at 10 (verl's guard: exp(-d) overflows for a token the
    policy has pushed far below the reference).
    """
    d_BL = logprobs_BL - ref_logprobs_BL
    if estimator == "k1":
        return d_BL
    if estimator == "k3":
        d_BL = d_BL.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        return (torch.expm1(-d_BL) + d_BL).clamp(max=K3_CLAMP)
    raise ValueError(f"unknown KL estimator {estimator!r}; expected 'k1' or 'k3'")


def aggregate(
    loss_BL: torch.Tensor, mask_BL: torch.Tensor, agg: Aggregation, denominator: float | None = None
) -> torch.Tensor:
    """Sum of per-token losses / total tokens (token_mean), or of per-sequence means / sequences (seq_mean).

    `denominator`: the step's global token count (token_mean) or sequence count (seq_mean); None: this batch's.
    """
    if agg == "token_mean":
        return masked_sum(loss_BL, mask_BL) / (mask_BL.sum() if denominator is None else denominator)
    if agg == "seq_mean":
        per_seq_B = torch.where(mask_BL, loss_BL, 0.0).sum(-1) / mask_BL.sum(-1).clamp(min=1)
        return per_seq_B.sum() / (mask_BL.shape[0] if denominator is None else denominator)
    raise ValueError(f"unknown loss aggregation {agg!r}; expected 'token_mean' or 'seq_mean'")


def policy_loss(
    logprobs_BL: torch.Tensor,
    old_logprobs_BL: torch.Tensor,
    advantages_BL: torch.Tensor,
    mask_BL: torch.Tensor,
    clip_eps: float,
    agg: Aggregation,
    denominator: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate loss -> (loss, clipped tokens: how many of this batch's tokens had the clip active).

    The clipped-token count is the same under both aggregations; divided by a token count it is the usual
    clip fraction (a share of tokens, whatever `agg` weights the loss by).
    """
    ratio_BL = torch.exp((logprobs_BL - old_logprobs_BL).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    unclipped_BL = -advantages_BL * ratio_BL
    clipped_BL = -advantages_BL * ratio_BL.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    loss = aggregate(torch.maximum(unclipped_BL, clipped_BL), mask_BL, agg, denominator)
    return loss, masked_sum((clipped_BL > unclipped_BL).float(), mask_BL).detach()


def value_loss(
    values_BL: torch.Tensor,
    old_values_BL: torch.Tensor,
    returns_BL: torch.Tensor,
    mask_BL: torch.Tensor,
    clip: float,
    agg: Aggregation,
    denominator: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss 1/2 max((V - G)^2, (V_clipped - G)^2) -> (loss, tokens where the clip was active)."""
    clipped_BL = old_values_BL + (values_BL - old_values_BL).clamp(-clip, clip)
    loss_unclipped_BL = (values_BL - returns_BL) ** 2
    loss_clipped_BL = (clipped_BL - returns_BL) ** 2
    loss = 0.5 * aggregate(torch.maximum(loss_unclipped_BL, loss_clipped_BL), mask_BL, agg, denominator)
    return loss, masked_sum((loss_clipped_BL > loss_unclipped_BL).float(), mask_BL).detach()
