"""The endogenous reward as pure tensor functions (Li et al. 2025, arXiv 2506.23235, eq. for r_h).

A language model's logits z are a soft Q-function; the inverse soft Bellman operator gives a token reward

    r_h = alpha * ( z_h[a_h] - logsumexp(z_{h+1}) ),     logsumexp after the last scored token := 0

where z_h are the raw logits at the position that predicts response token a_h. Equivalently
r_h = alpha * log pi(a_h | s_h) + V(s_h) - V(s_{h+1}) with V = alpha * logsumexp(z), so the sum telescopes:

    sum_h r_h = alpha * ( log pi(y | x) + logsumexp(z_1) ).

Textbook IRL would also need V at the terminal state; the paper (and we) set it to 0, which is what makes the
sequence reward "log-likelihood plus a prompt-dependent constant".

A response cut at the token limit did not reach a terminal state: the state after its last token still has a
soft value. `final_lse_B` (logsumexp of the logits after each row's last token, z_{H+1}, from the same forward)
gives the last token its full reward alpha * (z_H[a_H] - logsumexp(z_{H+1})); a critic then bootstraps the rest
(`train.truncation=bootstrap`). Rows with final_lse 0 keep the terminal convention.

Everything here takes tensors and returns tensors. Layout: responses are right-aligned to column 0 ("response
layout"): column h of row b is response token h, and `mask_BL` is a contiguous prefix of True per row.

Shape legend: B batch, L response length, N flattened response tokens, V vocab, D hidden size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_SIZE = 1024
"""Response tokens per chunk of logits: 1024 x 152k vocab x 4 bytes = 0.6 GB of float32 at most."""


def logit_stats(
    hidden_ND: torch.Tensor,
    weight_VD: torch.Tensor,
    targets_N: torch.Tensor,
    bias_V: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chosen-token logit z[a], logsumexp(z) and logsumexp(z / temperature) per row, `chunk_size` rows at a time.

    Logits are computed in the weights' dtype (as the model's own head does) and reduced in float32.
    Returns (chosen_N, lse_N, lse_at_temperature_N) in float32 (float64 if the weights are float64); the last
    equals lse_N at temperature 1 (and is then not recomputed).
    """
    out_dtype = torch.promote_types(weight_VD.dtype, torch.float32)
    chosen_N = torch.empty(hidden_ND.shape[0], dtype=out_dtype, device=hidden_ND.device)
    lse_N = torch.empty_like(chosen_N)
    lse_t_N = lse_N if temperature == 1.0 else torch.empty_like(chosen_N)
    for start in range(0, hidden_ND.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        logits_CV = F.linear(hidden_ND[rows], weight_VD, bias_V).to(out_dtype)
        lse_N[rows] = torch.logsumexp(logits_CV, dim=-1)
        if temperature != 1.0:
            lse_t_N[rows] = torch.logsumexp(logits_CV / temperature, dim=-1)
        chosen_N[rows] = logits_CV.gather(-1, targets_N[rows, None]).squeeze(-1)
    return chosen_N, lse_N, lse_t_N


def token_logprobs(
    chosen_BL: torch.Tensor, lse_BL: torch.Tensor, mask_BL: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log softmax(z_h / T)[a_h] = z_h[a_h] / T - logsumexp(z_h / T); `lse_BL` must be logsumexp(z_h / T).

    Zero outside the mask.
    """
    return torch.where(mask_BL, chosen_BL / temperature - lse_BL, 0.0)


def endogenous_token_rewards(
    chosen_BL: torch.Tensor,
    lse_BL: torch.Tensor,
    mask_BL: torch.Tensor,
    alpha: float,
    final_lse_B: torch.Tensor | None = None,
) -> torch.Tensor:
    """r_h = alpha * (z_h[a_h] - logsumexp(z_{h+1})); after each row's last token logsumexp := final_lse_B.

    `lse_BL[:, h+1]` is logsumexp(z_{h+1}) because column h+1 holds the logits that predict token h+1.
    `final_lse_B`: logsumexp of the logits after the last token for rows cut at the token limit, 0 for rows
    that ended (terminal); None: every row terminal. Zero outside the mask.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    next_lse_BL = torch.zeros_like(lse_BL)
    next_lse_BL[:, :-1] = torch.where(mask_BL[:, 1:], lse_BL[:, 1:], 0.0)
    if final_lse_B is not None:
        last_B = mask_BL.sum(-1) - 1
        rows_B = torch.arange(mask_BL.shape[0], device=mask_BL.device)
        next_lse_BL[rows_B, last_B] = final_lse_B.to(next_lse_BL.dtype)
    return torch.where(mask_BL, alpha * (chosen_BL - next_lse_BL), 0.0)


def sequence_rewards(token_rewards_BL: torch.Tensor) -> torch.Tensor:
    """The response-level endogenous reward: the sum of token rewards (= alpha*(log pi(y|x) + lse(z_1)))."""
    return token_rewards_BL.sum(dim=-1)
