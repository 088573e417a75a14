"""Packing (prompt ids, response ids) pairs into model inputs, and the index maps back to response layout.

Two layouts, one `PackedBatch` type: padded (one row per sequence, padded on the right or left to the longest)
and packed (`padding_side="packed"`: every sequence concatenated into ONE row of N = sum of lengths tokens,
positions restarting at 0 per sequence, `cu_seqlens_S` marking where each starts). A packed batch computes no
padding; its attention must stay inside each sequence, which `core.varlen` does without building a mask.

Masks come from lengths, never from `ids != pad_id`: Qwen's pad id is also its end-of-text id, and a mask built
from ids silently drops a real EOS token from the reward and the loss.

Shape legend: B sequences, T row length (padded: the longest sequence; packed: N, with one row), L longest
response, S = B + 1 sequence boundaries.
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
    cu_seqlens_S: torch.Tensor | None = None
    """Packed layout only (else None): int32 start of each sequence in the one row, then N."""
    max_seqlen: int = 0
    """Packed layout only: the longest sequence (what the varlen attention kernel sizes its tiles by)."""

    @property
    def packed(self) -> bool:
        return self.cu_seqlens_S is not None

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
        return None if self.right_padded or self.packed else self.attention_mask_BT

    def decoder_inputs(self) -> dict:
        """The keyword arguments of the decoder's forward for this batch. A packed batch adds the sequence
        boundaries under the names of transformers' FlashAttentionKwargs: the decoder hands them to every
        attention call, where `core.varlen`'s implementation reads them (run it under `varlen_attention`)."""
        inputs = {
            "input_ids": self.input_ids_BT,
            "attention_mask": self.decoder_mask(),
            "position_ids": self.position_ids_BT,
            "use_cache": False,
        }
        if self.packed:
            inputs.update(
                cu_seq_lens_q=self.cu_seqlens_S,
                cu_seq_lens_k=self.cu_seqlens_S,
                max_length_q=self.max_seqlen,
                max_length_k=self.max_seqlen,
            )
        return inputs

    def flat_index(self, index_BX: torch.Tensor) -> torch.Tensor:
        """Positions within each sequence's row ([B, ...], as `predictor_index_BL` and `final_index_B`) as
        indices into the decoder output flattened to [rows x T, D]: row b's positions shift by b x T when
        padded; a packed batch's one row already holds them as they are."""
        if self.packed:
            return index_BX
        T = self.input_ids_BT.shape[1]
        rows_B = torch.arange(index_BX.shape[0], device=index_BX.device) * T
        return index_BX + rows_B.view(-1, *[1] * (index_BX.dim() - 1))

    def gather(
        self, out_BTD: torch.Tensor, index_BX: torch.Tensor, mask_BX: torch.Tensor | None = None
    ) -> torch.Tensor:
        """out_BTD's vectors at positions `index_BX` (see `flat_index`): [*index_BX.shape, D]; with `mask_BX`,
        only where it is True, flattened to [n, D]."""
        flat_BX = self.flat_index(index_BX)
        return out_BTD.flatten(0, 1)[flat_BX if mask_BX is None else flat_BX[mask_BX]]


def pack(
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    pad_id: int,
    padding_side: str = "right",
) -> PackedBatch:
    """Concatenate each prompt with its response and pad the batch on `padding_side` ("right" or "left"), or
    ("packed") lay every sequence end to end in one row, with no padding."""
    if len(prompt_ids) != len(response_ids):
        raise UserError(f"got {len(prompt_ids)} prompts but {len(response_ids)} responses")
    if padding_side not in ("right", "left", "packed"):
        raise UserError(f"padding_side must be 'right', 'left' or 'packed', got {padding_side!r}")
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        if not p:
            raise UserError(f"prompt {i} is empty: at least one prompt token is needed to score the response")
        if not r:
            raise UserError(f"response {i} is empty: there is nothing to score")
    lengths = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
    B, L = len(lengths), max(len(r) for r in response_ids)
    starts = [sum(lengths[:b]) for b in range(B + 1)]  # packed: sequence b at [starts[b], starts[b + 1])
    packed = padding_side == "packed"
    rows, T = (1, starts[-1]) if packed else (B, max(lengths))
    input_ids_BT = torch.full((rows, T), pad_id, dtype=torch.long)
    attention_mask_BT = torch.zeros((rows, T), dtype=torch.long)
    position_ids_BT = torch.zeros((rows, T), dtype=torch.long)
    predictor_index_BL = torch.zeros((B, L), dtype=torch.long)
    response_ids_BL = torch.full((B, L), pad_id, dtype=torch.long)
    response_mask_BL = torch.zeros((B, L), dtype=torch.bool)
    final_index_B = torch.zeros(B, dtype=torch.long)
    for b, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        row = 0 if packed else b
        offset = {"right": 0, "left": T - lengths[b], "packed": starts[b]}[padding_side]
        seq = torch.tensor(list(p) + list(r), dtype=torch.long)
        input_ids_BT[row, offset : offset + lengths[b]] = seq
        attention_mask_BT[row, offset : offset + lengths[b]] = 1
        if padding_side == "right":  # positions run on through the padding: see `decoder_mask`
            position_ids_BT[row] = torch.arange(T)
        else:
            position_ids_BT[row, offset : offset + lengths[b]] = torch.arange(lengths[b])
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
        cu_seqlens_S=torch.tensor(starts, dtype=torch.int32) if packed else None,
        max_seqlen=max(lengths) if packed else 0,
    )


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, p in enumerate(prompts):
        input_ids[row, width - len(p) :] = torch.tensor(list(p))
        attention_mask[row, width - len(p) :] = 1
    return input_ids, attention_mask
