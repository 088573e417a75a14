"""Generators held across calls: bucketed shapes compile a bounded number of times; weight sync takes effect."""

from __future__ import annotations

import random
import typing

import pytest
import torch
from conftest import small_qwen
from torch._dynamo.testing import CompileCounter

from endo_rl.core import config
from endo_rl.core.config import GenerationConfig
from endo_rl.core.errors import UserError
from endo_rl.generation.decode_attention import ATTENTION
from endo_rl.generation.generator import HFGenerator, StaticDecoderGenerator, generate, make_generator
from endo_rl.generation.sampling import SamplingConfig

PAD, EOS = 0, 1


def test_a_kept_decoder_compiles_a_bounded_number_of_times_over_30_calls():
    """Changing prompt widths, batch sizes and lengths, and rows dropped as they finish (59 of the 1000 tokens
    stop a row: lengths vary, and decoders compact down to 2 rows). The two compiled halves of a layer see the
    batch size alone: each is compiled for the first batch, once more when a second makes the batch symbolic,
    once for a batch of one; the attention window, the cache length and compaction never cause a compile."""
    torch._dynamo.reset()
    counter = CompileCounter()
    model = small_qwen(torch.float32)
    generator = StaticDecoderGenerator(
        model, batch_size=8, prompt_bucket=8, length_bucket=16, window=4, compile=counter, compact_min_rows=2
    )
    rng = random.Random(0)
    counts, compacted = [], 0
    warm_up = [8, 3, 1]  # the first batch, a second one (batch becomes symbolic), a batch of one
    for call in range(30):
        n = warm_up[call] if call < len(warm_up) else rng.randint(1, 8)
        width = rng.randint(2, 40)
        prompts = [[rng.randrange(2, 1000) for _ in range(rng.randint(1, width))] for _ in range(n)]
        sampling = SamplingConfig(max_new_tokens=rng.randint(4, 40), temperature=1.0)
        out = generator.generate(prompts, sampling, stop_ids=list(range(1, 60)), pad_id=PAD)
        assert [c.prompt_index for c in out] == list(range(n))
        assert all(len(c.token_ids) == sampling.max_new_tokens or not c.truncated for c in out)
        counts.append(counter.frame_count)
        compacted += sum(d.rows < d.batch_size for d in generator.decoders.values())
    assert 2 <= counts[-1] <= 6, counts
    assert counts[len(warm_up) - 1] == counts[-1], f"compiled again after warm-up: {counts}"
    assert compacted >= 5, compacted


def test_a_fresh_decoder_per_call_would_compile_per_shape():
    """The counter counts what the first test bounds: without dynamic shapes every new shape is a compile."""
    torch._dynamo.reset()
    counter = CompileCounter()
    layer = torch.compile(lambda x: x * 2 + 1, backend=counter, dynamic=False)
    for n in range(1, 6):
        layer(torch.ones(n, 3))
    assert counter.frame_count == 5


def test_generator_matches_hf_greedy_and_follows_weight_updates():
    model = small_qwen()
    prompts = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15], [3], [40, 41, 42, 43, 44, 45, 46, 47, 48]]
    greedy = SamplingConfig(max_new_tokens=9, temperature=0)
    static = StaticDecoderGenerator(model, batch_size=4, prompt_bucket=4, length_bucket=8, window=4)

    def tokens(completions):
        return [c.token_ids for c in completions]

    hf = HFGenerator(model, batch_size=3)
    assert tokens(static.generate(prompts, greedy, [EOS], PAD)) == tokens(
        hf.generate(prompts, greedy, [EOS], PAD)
    )
    before = tokens(static.generate(prompts, greedy, [EOS], PAD))
    with torch.no_grad():  # an optimizer step: in place, same storage
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    static.sync_weights(model)
    after = tokens(static.generate(prompts, greedy, [EOS], PAD))
    assert after != before
    assert after == tokens(hf.generate(prompts, greedy, [EOS], PAD))
    with torch.no_grad():  # new storage (as ZeRO-3 gathering would give): re-bound by sync_weights
        for p in model.parameters():
            p.data = p.data.clone() * 1.1
    static.sync_weights(model)
    assert tokens(static.generate(prompts, greedy, [EOS], PAD)) == tokens(
        hf.generate(prompts, greedy, [EOS], PAD)
    )


def test_make_generator_and_one_shot_generate():
    model = small_qwen()
    assert isinstance(make_generator(model, "auto"), HFGenerator)  # CPU: HF
    assert isinstance(make_generator(model, "static"), StaticDecoderGenerator)
    greedy = SamplingConfig(max_new_tokens=5, temperature=0)
    one_shot = generate(model, [[5, 6, 7]], greedy, [EOS], PAD, backend="static")
    assert len(one_shot[0].token_ids) == 5 and one_shot[0].truncated


def test_flex_decode_attention_gives_the_sdpa_greedy_tokens():
    """float32, ragged prompts, windows of 4 slots (none a multiple of flex's 128-key block)."""
    model = small_qwen(torch.float32)
    prompts = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15], [3], [40, 41, 42, 43, 44, 45, 46, 47, 48]]
    greedy = SamplingConfig(max_new_tokens=14, temperature=0)

    def tokens(attention):
        generator = StaticDecoderGenerator(
            model, batch_size=4, prompt_bucket=4, length_bucket=8, window=4, attention=attention
        )
        return [c.token_ids for c in generator.generate(prompts, greedy, [EOS], PAD)]

    sdpa = tokens("sdpa")
    assert len({t for row in sdpa for t in row}) > 10  # the rows vary: equal lists mean something
    assert tokens("flex") == sdpa


def test_decode_attention_is_a_config_key_with_the_decoders_choices():
    assert set(typing.get_args(typing.get_type_hints(GenerationConfig)["decode_attention"])) == set(ATTENTION)
    cfg = config.load(None, ["generation.decode_attention=flex", "generation.backend=static"])
    generator = make_generator(small_qwen(), cfg.generation.backend, 4, cfg.generation.decode_attention)
    assert generator.attention == "flex"
    with pytest.raises(UserError, match=r"generation.decode_attention': expected one of .*'flex'.*'flash'"):
        config.load(None, ["generation.decode_attention=flash"])
    with pytest.raises(ValueError, match=r"one of \('flex', 'gqa', 'sdpa'\), got 'flash'"):
        make_generator(small_qwen(), "static", 4, "flash")
