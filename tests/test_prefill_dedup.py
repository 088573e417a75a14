"""Prefill once per distinct prompt: the same cache, logits and tokens as prefilling every row."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_qwen

from endo_rl.core.batch import left_pad
from endo_rl.generation import static as static_decode
from endo_rl.generation.decode_attention import distinct_rows
from endo_rl.generation.sampling import SamplingConfig

PAD, EOS = 151643, 151645
GROUPED = [[5, 6, 7], [11, 12], [5, 6, 7], [11, 12], [5, 6, 7], [3, 4, 5, 6], [11, 12], [5, 6, 7]]
"""Prompts repeated as in a GRPO micro-batch (not adjacent), and one prompt alone."""


def test_distinct_rows_against_a_loop():
    ids, mask = left_pad(GROUPED, PAD)
    rows_U, copies_B = distinct_rows(ids, mask)
    assert len(rows_U) == 3
    for b, prompt in enumerate(GROUPED):
        assert GROUPED[rows_U[copies_B[b]]] == prompt
        assert rows_U[copies_B[b]] == GROUPED.index(prompt)  # the first occurrence is the one run
    assert distinct_rows(*left_pad([[1, 2], [2, 1], [3]], PAD)) is None


def test_same_ids_with_a_different_mask_are_distinct():
    ids = torch.tensor([[PAD, 7, 8], [PAD, 7, 8]])
    assert distinct_rows(ids, torch.tensor([[0, 1, 1], [1, 1, 1]])) is None


def decoder_pair(model, batch, max_len):
    plain = static_decode.StaticDecoder(model, batch_size=batch, max_len=max_len)
    plain.dedup_prefill = False
    return static_decode.StaticDecoder(model, batch_size=batch, max_len=max_len), plain


@pytest.mark.parametrize(
    "prompts", [GROUPED, [[5, 6, 7], [11, 12], [3, 4, 5, 6], [9]]], ids=["dups", "distinct"]
)
def test_prefill_cache_and_logits_equal_prefilling_every_row(prompts):
    model = make_tiny_qwen(dtype=torch.float32)
    ids, mask = left_pad(prompts, PAD)
    dedup, plain = decoder_pair(model, len(prompts), ids.shape[1] + 4)
    rows_run: list[int] = []  # rows each prefill's forward computed
    model.get_decoder().embed_tokens.register_forward_hook(lambda m, args, out: rows_run.append(out.shape[0]))
    logits, want = dedup.prefill(ids, mask), plain.prefill(ids, mask)
    assert rows_run == [len(set(map(tuple, prompts))), len(prompts)]
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dedup.k_cache, plain.k_cache, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dedup.v_cache, plain.v_cache, rtol=1e-5, atol=1e-5)
    for name in ("key_valid_BS", "position_B1", "slot_1"):
        assert torch.equal(getattr(dedup, name), getattr(plain, name)), name


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_generated_tokens_equal_prefilling_every_row(temperature):
    """A micro-batch with duplicate prompts (and filler copies of the first: 8 prompts in a batch of 10)."""
    model = make_tiny_qwen(dtype=torch.float32)
    sampling = SamplingConfig(max_new_tokens=6, temperature=temperature)
    dedup, plain = decoder_pair(model, 10, 8 + 6)
    out = []
    for decoder in (dedup, plain):
        torch.manual_seed(0)
        out.append(static_decode.generate_rows(decoder, GROUPED, sampling, [EOS], PAD, width=8))
    assert out[0] == out[1]
    if temperature > 0:  # sampled: copies of one prompt do not all give the same response
        assert len({tuple(out[0][i]) for i, p in enumerate(GROUPED) if p == [5, 6, 7]}) > 1
