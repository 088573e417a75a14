"""Packing (prompt ids, response ids) pairs into padded model inputs, and the index maps back to response layout.

Masks come from lengths, never from `ids != pad_id`: Qwen's pad id is also its end-of-text id, and a mask built
from ids silently drops a real EOS token from the reward and the loss.

Shape legend: B batch, T padded sequence length, L longest response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from endo_rl.core.errors import UserError


@dataclass
class PackedBatch:
    input_ids_BT: torch.Tensor
    attention_mask_BT: torch.Tensor
    position_ids_BT: torch.Tensor
    predictor_index_BL: torch.Tensor
    """Position whose output predicts response token h (clamped to a valid position past each response)."""
    response_mask_BL: torch.Tensor
    """True for the real tokens of each response; a contiguous prefix per row."""
    response_ids_BL: torch.Tensor
    """Response tokens in response layout (pad id past each response)."""
    final_index_B: torch.Tensor
    """Position of each row's last response token: its output is z_{H+1}, the state after the response."""
    right_padded: bool = False
    """Every row's tokens at columns [0, length): causal attention alone is exact (`decoder_mask`)."""

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(
            **{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        )

    def decoder_mask(self) -> torch.Tensor | None:
        """The attention mask to give the decoder: None for a right-padded batch, the mask otherwise.

        With every row's tokens at columns [0, length), a real token attends only to earlier columns, all of them
        real, so the padding mask changes nothing that is read (pad columns' outputs are never gathered). Without
        a mask the decoder's attention is plain causal: SDPA's is_causal, which its flash kernel serves, and no
        [B, 1, T, T] mask to build. Position ids run on through a right-padded row's padding (0, 1, ..., T - 1):
        a row whose positions restart at 0 would look to transformers like packed sequences, and it would build a
        block-diagonal mask after all. Left padding needs the mask."""
        return None if self.right_padded else self.attention_mask_BT


def pack(
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    pad_id: int,
    padding_side: str = "right",
) -> PackedBatch:
    """Concatenate each prompt with its response and pad the batch on `padding_side` ("right" or "left")."""
    if len(prompt_ids) != len(response_ids):
        raise UserError(f"got {len(prompt_ids)} prompts but {len(response_ids)} responses")
    if padding_side not in ("right", "left"):
        raise UserError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        if not p:
            raise UserError(f"prompt {i} is empty: at least one prompt token is needed to score the response")
        if not r:
            raise UserError(f"response {i} is empty: there is nothing to score")
    lengths = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
    T, B = max(lengths), len(lengths)
    L = max(len(r) for r in response_ids)
    input_ids_BT = torch.full((B, T), pad_id, dtype=torch.long)
    attention_mask_BT = torch.zeros((B, T), dtype=torch.long)
    position_ids_BT = torch.zeros((B, T), dtype=torch.long)
    predictor_index_BL = torch.zeros((B, L), dtype=torch.long)
    response_ids_BL = torch.full((B, L), pad_id, dtype=torch.long)
    response_mask_BL = torch.zeros((B, L), dtype=torch.bool)
    final_index_B = torch.zeros(B, dtype=torch.long)
    for b, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        offset = T - lengths[b] if padding_side == "left" else 0
        seq = torch.tensor(list(p) + list(r), dtype=torch.long)
        input_ids_BT[b, offset : offset + lengths[b]] = seq
        attention_mask_BT[b, offset : offset + lengths[b]] = 1
        if padding_side == "right":  # positions run on through the padding: see `decoder_mask`
            position_ids_BT[b] = torch.arange(T)
        else:
            position_ids_BT[b, offset : offset + lengths[b]] = torch.arange(lengths[b])
        first_predictor = offset + len(p) - 1
        predictor_index_BL[b] = torch.arange(first_predictor, first_predictor + L).clamp(max=T - 1)
        response_ids_BL[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        response_mask_BL[b, : len(r)] = True
        final_index_B[b] = offset + lengths[b] - 1
    return PackedBatch(
        input_ids_BT,
        attention_mask_BT,
        position_ids_BT,
        predictor_index_BL,
        response_mask_BL,
        response_ids_BL,
        final_index_B,
        right_padded=padding_side == "right",
    )


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, p in enumerate(prompts):
        input_ids[row, width - len(p) :] = torch.tensor(list(p))
        attention_mask[row, width - len(p) :] = 1
    return input_ids, attention_mask
