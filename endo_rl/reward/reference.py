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

from endo_rl.core import templates
from endo_rl.core.batch import PackedBatch, pack
from endo_rl.core.errors import UserError
from endo_rl.reward import endogenous as reward


@dataclass
class ReferenceOutput:
    """Outputs in response layout; zero past each response."""

    token_rewards_BL: torch.Tensor
    logprobs_BL: torch.Tensor
    mask_BL: torch.Tensor
    rewards_B: torch.Tensor
    """Sequence-level endogenous reward: the sum of token rewards."""


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
    chosen_BL: torch.Tensor, lse_BL: torch.Tensor, mask_BL: torch.Tensor, alpha: float
) -> ReferenceOutput:
    token_rewards_BL = reward.endogenous_token_rewards(chosen_BL, lse_BL, mask_BL, alpha)
    return ReferenceOutput(
        token_rewards_BL=token_rewards_BL,
        logprobs_BL=reward.token_logprobs(chosen_BL, lse_BL, mask_BL),
        mask_BL=mask_BL,
        rewards_B=reward.sequence_rewards(token_rewards_BL),
    )


def final_hidden_states(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """The decoder's last hidden state (after the final norm), [B, T, D]; the LM head is not applied."""
    out = model.get_decoder()(
        input_ids=batch.input_ids_BT,
        attention_mask=batch.attention_mask_BT,
        position_ids=batch.position_ids_BT,
        use_cache=False,
    )
    return out.last_hidden_state


def gather_response_hidden(hidden_BTD: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """Hidden states of the scored tokens' predictor positions, flattened to [N, D]."""
    index_BLD = batch.predictor_index_BL[..., None].expand(-1, -1, hidden_BTD.shape[-1])
    return hidden_BTD.gather(1, index_BLD)[batch.response_mask_BL]


def reference_forward(
    model: torch.nn.Module, batch: PackedBatch, alpha: float, chunk_size: int = reward.DEFAULT_CHUNK_SIZE
) -> ReferenceOutput:
    """Token rewards, log-probs and sequence rewards from one forward pass, chunking the LM head."""
    if not _has_plain_head(model):
        return naive_reference_forward(model, batch, alpha)
    mask_BL = batch.response_mask_BL
    hidden_ND = gather_response_hidden(final_hidden_states(model, batch), batch)
    head = model.get_output_embeddings()
    chosen_N, lse_N = reward.logit_stats(
        hidden_ND, head.weight, batch.response_ids_BL[mask_BL], head.bias, chunk_size
    )
    chosen_BL = torch.zeros(mask_BL.shape, dtype=chosen_N.dtype, device=chosen_N.device)
    lse_BL = torch.zeros_like(chosen_BL)
    chosen_BL[mask_BL], lse_BL[mask_BL] = chosen_N, lse_N
    return _finish(chosen_BL, lse_BL, mask_BL, alpha)


def naive_reference_forward(model: torch.nn.Module, batch: PackedBatch, alpha: float) -> ReferenceOutput:
    """Same outputs via the model's full [B, T, V] logits upcast to float32 (memory-hungry reference path)."""
    logits_BTV = model(
        input_ids=batch.input_ids_BT,
        attention_mask=batch.attention_mask_BT,
        position_ids=batch.position_ids_BT,
        use_cache=False,
    ).logits
    logits_BTV = logits_BTV.to(torch.promote_types(logits_BTV.dtype, torch.float32))
    index_BLV = batch.predictor_index_BL[..., None].expand(-1, -1, logits_BTV.shape[-1])
    logits_BLV = logits_BTV.gather(1, index_BLV)
    lse_BL = torch.logsumexp(logits_BLV, dim=-1)
    chosen_BL = logits_BLV.gather(-1, batch.response_ids_BL[..., None]).squeeze(-1)
    mask_BL = batch.response_mask_BL
    return _finish(torch.where(mask_BL, chosen_BL, 0.0), torch.where(mask_BL, lse_BL, 0.0), mask_BL, alpha)


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
