"""Dropping finished rows from the static decoder (`StaticDecoder.compact`): the rows kept decode exactly as they
would have in the full batch, and generation with compaction gives the same greedy tokens as without."""

from __future__ import annotations

import pytest
import torch
from conftest import small_qwen

from endo_rl.core import config
from endo_rl.core.batch import left_pad
from endo_rl.core.config import GenerationConfig
from endo_rl.core.errors import UserError
from endo_rl.generation import static as static_decode
from endo_rl.generation.decode_attention import ATTENTION
from endo_rl.generation.generator import StaticDecoderGenerator
from endo_rl.generation.sampling import SamplingConfig

PAD = 0
PROMPTS = [[5 + i, 6 + 2 * i, 7, 8 + i][: 1 + i % 4] for i in range(16)]
"""16 prompts of 1 to 4 tokens: left padding differs between rows, so moved rows carry different masks."""


@pytest.mark.parametrize(
    "live, rows, min_rows, expected",
    [
        (64, 64, 8, 64),  # nothing finished
        (33, 64, 8, 64),  # more than half still live
        (32, 64, 8, 32),
        (20, 64, 8, 32),
        (9, 64, 8, 16),
        (3, 64, 8, 8),  # never below min_rows
        (1, 8, 8, 8),
        (3, 64, 0, 64),  # 0: never compact
        (2, 4, 8, 4),  # a batch already below min_rows stays
    ],
)
def test_compacted_rows(live, rows, min_rows, expected):
    assert static_decode.compacted_rows(live, rows, min_rows) == expected


@pytest.mark.parametrize("attention", ATTENTION)
def test_compacted_rows_decode_as_in_the_full_batch(attention):
    """Teacher-forced: after 3 tokens, rows [5, 0, 9, 2] (out of order) move to the front of one decoder; its
    next 3 steps' logits equal the full decoder's logits of those rows."""
    model = small_qwen()
    full = static_decode.StaticDecoder(model, batch_size=16, max_len=12, window=4, attention=attention)
    compacted = static_decode.StaticDecoder(model, batch_size=16, max_len=12, window=4, attention=attention)
    ids, mask = left_pad(PROMPTS, PAD)
    torch.manual_seed(0)
    tokens_BT = torch.randint(2, 1000, (16, 6))
    logits_full, logits_compacted = full.prefill(ids, mask), compacted.prefill(ids, mask)
    for t in range(3):
        logits_full, logits_compacted = full.decode(tokens_BT[:, t]), compacted.decode(tokens_BT[:, t])
    torch.testing.assert_close(logits_compacted, logits_full, rtol=0, atol=0)
    keep = torch.tensor([5, 0, 9, 2])
    compacted.compact(keep)
    assert compacted.rows == 4
    for t in range(3, 6):
        logits_full, logits_compacted = full.decode(tokens_BT[:, t]), compacted.decode(tokens_BT[keep, t])
        torch.testing.assert_close(logits_compacted, logits_full[keep], rtol=1e-12, atol=1e-12)


def test_compact_refuses_more_rows_and_decode_checks_the_row_count():
    model = small_qwen()
    decoder = static_decode.StaticDecoder(model, batch_size=4, max_len=8)
    decoder.prefill(*left_pad(PROMPTS[:4], PAD))
    with pytest.raises(ValueError, match="compact to 5 of the 4"):
        decoder.compact(torch.arange(5))
    decoder.compact(torch.tensor([1, 3]))
    with pytest.raises(ValueError, match=r"one token per decoded row \(2\)"):
        decoder.decode(torch.tensor([7, 7, 7, 7]))
    decoder.prefill(*left_pad(PROMPTS[:4], PAD))  # a new call decodes every row again
    assert decoder.rows == 4


def greedy_tokens(model, prompts, stop_ids, min_rows, window=8):
    generator = StaticDecoderGenerator(model, batch_size=16, window=window, compact_min_rows=min_rows)
    greedy = SamplingConfig(max_new_tokens=64, temperature=0)
    completions = generator.generate(prompts, greedy, stop_ids, PAD)
    return [c.token_ids for c in completions], generator.decoders[16]


def test_generation_with_compaction_gives_the_same_greedy_tokens():
    """Stop tokens picked from an uncompacted run so that rows end at many different steps: the decoder halves
    its rows as they finish (checked every 16 tokens: 5 rows live after 16 -> 8 rows, 2 after 32 -> 2 rows),
    one row decodes on to step 59, and every response is the same token for token."""
    model = small_qwen()
    free, _ = greedy_tokens(model, PROMPTS, [-1], min_rows=0)  # no stop: every row runs 64 tokens
    stop_ids = sorted({free[r][2 + 4 * r] for r in range(15)})
    plain, plain_decoder = greedy_tokens(model, PROMPTS, stop_ids, min_rows=0)
    compacted, decoder = greedy_tokens(model, PROMPTS, stop_ids, min_rows=2)
    lengths = sorted(len(r) for r in plain)
    assert lengths[-6] <= 16 and lengths[-3] <= 32 and lengths[-1] > 48, lengths
    assert plain_decoder.rows == 16 and decoder.rows == 2
    assert compacted == plain


def test_compact_min_rows_is_checked():
    assert GenerationConfig().compact_min_rows == 8
    with pytest.raises(UserError, match="generation.compact_min_rows' must be an integer >= 0"):
        config.load(None, ["generation.compact_min_rows=-1"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("attention", ATTENTION)
def test_compaction_with_cuda_graphs_gives_the_same_greedy_tokens(attention):
    """On CUDA: compiled layers, one CUDA graph per (rows, window) in one shared memory pool; float32 (compiled
    flex has no float64 kernel; full float32 GEMMs, no TF32) and head dim 16 (compiled flex's least)."""
    model = small_qwen(torch.float32, hidden=64).cuda()
    free, _ = greedy_tokens(model, PROMPTS, [-1], min_rows=0)
    stop_ids = sorted({free[r][2 + 4 * r] for r in range(15)})
    generator = StaticDecoderGenerator(
        model, batch_size=16, window=8, compact_min_rows=0, attention=attention
    )
    greedy = SamplingConfig(max_new_tokens=64, temperature=0)
    plain = [c.token_ids for c in generator.generate(PROMPTS, greedy, stop_ids, PAD)]
    generator.compact_min_rows = 2
    compacted = [c.token_ids for c in generator.generate(PROMPTS, greedy, stop_ids, PAD)]
    assert compacted == plain
    assert min(rows for rows, *_ in generator.decoders[16].graphs) < 16  # graphs of fewer rows were replayed
