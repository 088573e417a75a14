"""The "flex" decode attention on CUDA: compiled FlexAttention inside the decoder's CUDA graphs (`-m gpu`).

On a CPU flex runs eagerly (tests/test_decode_attention.py); these check what only CUDA runs: the compiled
kernel against SDPA, a captured graph that follows in-place updates of the key mask, and the static decoder's
greedy tokens with CUDA graphs against SDPA's. G = 7 query heads per KV head, as in the 7B shape.
"""

from __future__ import annotations

import pytest
import torch

from endo_rl.generation.decode_attention import decode_attention
from endo_rl.generation.generator import StaticDecoderGenerator
from endo_rl.generation.sampling import SamplingConfig
from endo_rl.generation.static import capture_cuda_graph

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
DIMS = (14, 2, 64)  # heads, KV heads, head dim


def window_inputs(B: int, S: int, width: int, seed: int = 0):
    """q, a [B, K, S, d] cache's first `width` slots as k/v views, and a [B, S] key mask with left padding."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    H, K, d = DIMS
    q = torch.randn(B, H, 1, d, device="cuda", generator=g, dtype=torch.bfloat16)
    k_cache, v_cache = (
        torch.randn(B, K, S, d, device="cuda", generator=g, dtype=torch.bfloat16) for _ in "kv"
    )
    valid_BS = torch.ones(B, S, dtype=torch.bool, device="cuda")
    for b in range(B):
        valid_BS[b, : (b * 37) % max(width - 1, 1)] = False
    return q, k_cache[:, :, :width], v_cache[:, :, :width], valid_BS


@pytest.mark.parametrize("width", [128, 384, 1000])  # 1000: the last key block is partial
def test_compiled_flex_matches_sdpa(width):
    q, k, v, valid_BS = window_inputs(8, 1024, width)
    flex = decode_attention(q, k, v, valid_BS[:, :width], DIMS, "flex")
    sdpa = decode_attention(q, k, v, valid_BS[:, :width], DIMS, "sdpa")
    torch.testing.assert_close(flex.float(), sdpa.float(), rtol=2e-2, atol=2e-2)


def test_a_captured_flex_call_follows_in_place_mask_updates():
    width = 256
    q, k, v, valid_BS = window_inputs(8, 512, width, seed=1)
    graph, out = capture_cuda_graph(  # the warm-up runs compile, outside the capture
        lambda: decode_attention(q, k, v, valid_BS[:, :width], DIMS, "flex")
    )
    graph.replay()
    before = out.clone()
    valid_BS[:, :200] = False  # in place, as the decoder's index_fill_: the graph must see it
    graph.replay()
    want = decode_attention(q, k, v, valid_BS[:, :width], DIMS, "sdpa")
    torch.testing.assert_close(out.float(), want.float(), rtol=2e-2, atol=2e-2)
    assert not torch.allclose(out.float(), before.float(), atol=1e-2)


def test_static_decoder_with_flex_gives_sdpa_greedy_tokens():
    """float32, CUDA graphs, several windows of 16 slots and two batch buckets."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    H, K, d = DIMS
    cfg = Qwen2Config(
        vocab_size=1000,
        hidden_size=H * d,
        intermediate_size=1024,
        num_hidden_layers=2,
        num_attention_heads=H,
        num_key_value_heads=K,
    )
    model = Qwen2ForCausalLM(cfg).cuda().eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 1.0)  # wide logits: greedy tokens vary
    prompts = [[5 + i, 6, 7 + i, 8][: 1 + i % 4] for i in range(12)]
    greedy = SamplingConfig(max_new_tokens=40, temperature=0)

    def tokens(attention):
        generator = StaticDecoderGenerator(
            model, batch_size=8, prompt_bucket=4, length_bucket=16, window=16, attention=attention
        )
        return [c.token_ids for c in generator.generate(prompts, greedy, [-1], 0)]

    sdpa = tokens("sdpa")
    assert len({t for row in sdpa for t in row}) > 20
    assert tokens("flex") == sdpa
