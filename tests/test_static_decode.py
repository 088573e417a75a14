"""The static-cache decoder against HF: same logits at every step, same greedy tokens."""

from __future__ import annotations

import pytest
import torch
from conftest import check_decoder_logits, make_tiny_qwen

from endo_rl.generation import static as static_decode
from endo_rl.generation.decode_attention import ATTENTION
from endo_rl.generation.generator import generate
from endo_rl.generation.sampling import SamplingConfig

PAD, EOS = 151643, 151645


def make_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).double().eval()


@pytest.mark.parametrize("attention", ATTENTION)
@pytest.mark.parametrize(
    "make, window",
    [
        (lambda: make_tiny_qwen(dtype=torch.float64), 128),
        (lambda: make_tiny_qwen(dtype=torch.float64), 2),
        (make_llama, 3),
    ],
)
def test_prefill_and_decode_logits_match_full_forward(make, window, attention):
    """Also with attention windows smaller than the cache (each decode step attends to a prefix of it)."""
    model = make()
    prompts = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15]]  # ragged: left padding is exercised
    decoder = static_decode.StaticDecoder(
        model, batch_size=3, max_len=5 + 4, window=window, attention=attention
    )
    continuation = torch.tensor([[21, 22, 23], [24, 25, 26], [27, 28, 29]])
    check_decoder_logits(
        decoder, prompts, continuation, lambda seq: model(input_ids=seq).logits[0, -1].float()
    )


def test_greedy_generation_matches_hf():
    model = make_tiny_qwen(dtype=torch.float64)
    prompts = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15], [3]]
    greedy = SamplingConfig(max_new_tokens=7, temperature=0)
    hf = generate(model, prompts, greedy, stop_ids=[EOS], pad_id=PAD, batch_size=3)
    ours = generate(model, prompts, greedy, stop_ids=[EOS], pad_id=PAD, batch_size=3, backend="static")
    assert [c.token_ids for c in ours] == [c.token_ids for c in hf]
    assert all(c.truncated for c in ours)


def test_stop_token_ends_a_row_and_is_kept():
    model = make_tiny_qwen(dtype=torch.float64)
    greedy = SamplingConfig(max_new_tokens=6, temperature=0)
    first = generate(model, [[5, 6, 7]], greedy, stop_ids=[EOS], pad_id=PAD, backend="static")[0].token_ids
    stop = first[2]  # pretend the third greedy token is the stop token
    cut = generate(model, [[5, 6, 7]], greedy, stop_ids=[stop], pad_id=PAD, backend="static")[0]
    assert cut.token_ids == first[: first.index(stop) + 1] and not cut.truncated


def test_sampling_filters():
    torch.manual_seed(0)
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(2000, 1)
    assert set(static_decode.sample(logits, 1.0, 1.0, top_k=2).tolist()) == {2, 3}
    # softmax of [0,1,2,3] is [.032, .087, .237, .644]: top_p 0.7 keeps tokens 3 and 2
    assert set(static_decode.sample(logits, 1.0, 0.7, top_k=0).tolist()) == {2, 3}
    assert set(static_decode.sample(logits, 0.0, 1.0, 0).tolist()) == {3}
    counts = torch.bincount(static_decode.sample(logits, 1.0, 1.0, 0), minlength=4).float() / 2000
    torch.testing.assert_close(counts, torch.softmax(logits[0], 0), atol=0.04, rtol=0)
