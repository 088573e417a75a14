"""The frozen reference model: one forward pass gives token rewards, sequence rewards and reference log-probs.

The decoder runs once over prompt + response; the LM head is then applied chunk by chunk to the hidden states
of the response-predicting positions only (`reward.logit_stats`), so the float32 [B, T, V] logits tensor never
exists. `naive_reference_forward` is the textbook full-logits path, kept for tests and the memory benchmark.

Shape legend: B batch, T sequence, L response length, D hidden size, V vocab, N scored tokens in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from endo_rl.core import templates, varlen
from endo_rl.core.batch import PackedBatch, pack
from endo_rl.core.errors import UserError
from endo_rl.reward import endogenous as reward


@dataclass
class ReferenceOutput:
    """Outputs in response layout; zero past each response."""

    token_rewards_BL: torch.Tensor
    logprobs_BL: torch.Tensor
    """log softmax(z / temperature) of the sampled tokens (temperature 1 unless asked: the KL's reference)."""
    mask_BL: torch.Tensor
    rewards_B: torch.Tensor
    """Sequence-level endogenous reward: the sum of token rewards."""
    final_lse_B: torch.Tensor
    """logsumexp(z_{H+1}) of the raw logits after each row's last token (the soft value of the next state)."""


@dataclass
class ScoredResponse:
    """One response's scores as plain Python values (for the CLI, reports and TRL)."""

    token_ids: list[int]
    token_rewards: list[float]
    logprobs: list[float]
    reward: float


def _has_plain_head(model: torch.nn.Module) -> bool:
    """True when logits = lm_head(final hidden state), with no soft-capping or scaling after the head."""
    cfg = model.config
    return getattr(cfg, "final_logit_softcapping", None) is None and getattr(cfg, "logit_scale", None) is None


def _finish(
    stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    final_lse_B: torch.Tensor,
    mask_BL: torch.Tensor,
    alpha: float,
    temperature: float,
    bootstrap_B: torch.Tensor | None,
) -> ReferenceOutput:
    """(chosen, lse, lse at temperature) in response layout -> rewards (raw logits) and log-probs (at T)."""
    chosen_BL, lse_BL, lse_t_BL = stats
    cut_lse_B = None if bootstrap_B is None else torch.where(bootstrap_B, final_lse_B, 0.0)
    token_rewards_BL = reward.endogenous_token_rewards(chosen_BL, lse_BL, mask_BL, alpha, cut_lse_B)
    return ReferenceOutput(
        token_rewards_BL=token_rewards_BL,
        logprobs_BL=reward.token_logprobs(chosen_BL, lse_t_BL, mask_BL, temperature),
        mask_BL=mask_BL,
        rewards_B=reward.sequence_rewards(token_rewards_BL),
        final_lse_B=final_lse_B,
    )


def _inputs(model: torch.nn.Module, batch: PackedBatch) -> dict:
    """`batch.decoder_inputs()`, after checking that a packed batch meets `model` under
    `varlen.varlen_attention` (else it would attend across its sequences)."""
    if batch.packed:
        varlen.check_active(model)
    return batch.decoder_inputs()


def final_hidden_states(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """The decoder's last hidden state (after the final norm), [rows, T, D] (a packed batch: [1, N, D]); the LM
    head is not applied. A packed batch needs `model` under `varlen.varlen_attention`."""
    return model.get_decoder()(**_inputs(model, batch)).last_hidden_state


def gather_response_hidden(hidden_BTD: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """Hidden states of the scored tokens' predictor positions, flattened to [N, D] (N scored tokens)."""
    return batch.gather(hidden_BTD, batch.predictor_index_BL, batch.response_mask_BL)


def reference_forward(
    model: torch.nn.Module,
    batch: PackedBatch,
    alpha: float,
    chunk_size: int = reward.DEFAULT_CHUNK_SIZE,
    temperature: float = 1.0,
    bootstrap_B: torch.Tensor | None = None,
) -> ReferenceOutput:
    """Token rewards, log-probs and sequence rewards from one forward pass, chunking the LM head.

    Rewards always use the raw logits; `logprobs_BL` are those of softmax(z / temperature), the distribution
    the policy sampled from (for the KL). Rows marked in `bootstrap_B` (cut at the token limit) get
    logsumexp(z_{H+1}) after their last token instead of the terminal 0.
    """
    if not _has_plain_head(model):
        return naive_reference_forward(model, batch, alpha, temperature, bootstrap_B)
    mask_BL = batch.response_mask_BL
    hidden_BTD = final_hidden_states(model, batch)
    head = model.get_output_embeddings()
    stats_N = reward.logit_stats(
        gather_response_hidden(hidden_BTD, batch),
        head.weight,
        batch.response_ids_BL[mask_BL],
        head.bias,
        chunk_size,
        temperature,
    )
    stats_BL = tuple(_scatter(x_N, mask_BL) for x_N in stats_N)
    final_hidden_BD = batch.gather(hidden_BTD, batch.final_index_B)
    _, final_lse_B, _ = reward.logit_stats(
        final_hidden_BD, head.weight, torch.zeros_like(batch.final_index_B), head.bias, chunk_size
    )
    return _finish(stats_BL, final_lse_B, mask_BL, alpha, temperature, bootstrap_B)


def _scatter(x_N: torch.Tensor, mask_BL: torch.Tensor) -> torch.Tensor:
    out_BL = torch.zeros(mask_BL.shape, dtype=x_N.dtype, device=x_N.device)
    out_BL[mask_BL] = x_N
    return out_BL


def naive_reference_forward(
    model: torch.nn.Module,
    batch: PackedBatch,
    alpha: float,
    temperature: float = 1.0,
    bootstrap_B: torch.Tensor | None = None,
) -> ReferenceOutput:
    """Same outputs via the model's full [B, T, V] logits upcast to float32 (memory-hungry reference path)."""
    logits_BTV = model(**_inputs(model, batch)).logits
    logits_BTV = logits_BTV.to(torch.promote_types(logits_BTV.dtype, torch.float32))
    logits_BLV = batch.gather(logits_BTV, batch.predictor_index_BL)
    mask_BL = batch.response_mask_BL
    chosen_BL = logits_BLV.gather(-1, batch.response_ids_BL[..., None]).squeeze(-1)
    stats_BL = tuple(
        torch.where(mask_BL, x_BL, 0.0)
        for x_BL in (chosen_BL, logits_BLV.logsumexp(-1), (logits_BLV / temperature).logsumexp(-1))
    )
    final_lse_B = batch.gather(logits_BTV, batch.final_index_B).logsumexp(-1)
    return _finish(stats_BL, final_lse_B, mask_BL, alpha, temperature, bootstrap_B)


class ReferenceModel:
    """A frozen causal LM that scores responses with the endogenous reward.

    `score` takes one batch of token ids and returns tensors (for training); `score_each` splits any number of
    pairs into length-sorted micro-batches and returns plain values (for the CLI, reports and TRL).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        alpha: float = 1.0,
        chunk_size: int = reward.DEFAULT_CHUNK_SIZE,
        batch_size: int = 8,
    ):
        if alpha <= 0:
            raise UserError(f"alpha must be > 0, got {alpha}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.alpha = alpha
        self.chunk_size = chunk_size
        self.batch_size = batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def pad_id(self) -> int:
        return templates.pad_token_id(self.tokenizer)

    @torch.no_grad()
    def score(
        self, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]]
    ) -> ReferenceOutput:
        batch = pack([list(p) for p in prompt_ids], [list(r) for r in response_ids], self.pad_id)
        return reference_forward(self.model, batch.to(self.device), self.alpha, self.chunk_size)

    def score_each(
        self,
        prompt_ids: Sequence[Sequence[int]],
        response_ids: Sequence[Sequence[int]],
        progress: bool = False,
    ) -> list[ScoredResponse]:
        """Score any number of pairs in micro-batches of similar length; results in input order."""
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]) + len(response_ids[i]))
        results: list[ScoredResponse | None] = [None] * len(order)
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="scoring", unit="batch", disable=not progress):
            idx = order[start : start + self.batch_size]
            out = self.score([prompt_ids[i] for i in idx], [response_ids[i] for i in idx])
            for row, i in enumerate(idx):
                n = len(response_ids[i])
                results[i] = ScoredResponse(
                    token_ids=list(response_ids[i]),
                    token_rewards=out.token_rewards_BL[row, :n].tolist(),
                    logprobs=out.logprobs_BL[row, :n].tolist(),
                    reward=float(out.rewards_B[row]),
                )
        return results  # type: ignore[return-value]
