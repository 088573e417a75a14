"""The static decoder on PEFT LoRA models: the adapter is decoded, follows training, and switches off."""

from __future__ import annotations

import pytest
import torch
from conftest import check_decoder_logits, small_qwen
from peft import LoraConfig, get_peft_model

from endo_rl.generation import static as static_decode
from endo_rl.generation.generator import HFGenerator, StaticDecoderGenerator, resolve_backend
from endo_rl.generation.sampling import SamplingConfig

PAD, EOS = 0, 1
ALL_SEVEN = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPTS = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15], [3], [40, 41, 42, 43, 44, 45, 46, 47, 48]]
GREEDY = SamplingConfig(max_new_tokens=9, temperature=0)


def lora_model(targets=ALL_SEVEN, seed: int = 0, **kwargs):
    """small_qwen with a LoRA adapter whose B is random (PEFT starts B at zero: the adapter would be a no-op)."""
    model = get_peft_model(small_qwen(), LoraConfig(r=4, lora_alpha=8, target_modules=targets, **kwargs))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model.eval()


def tokens(completions):
    return [c.token_ids for c in completions]


def hf_tokens(model):
    return tokens(HFGenerator(model, batch_size=3).generate(PROMPTS, GREEDY, [EOS], PAD))


@pytest.mark.parametrize("fuse", [True, False])
def test_prefill_and_decode_logits_match_the_peft_forward(fuse):
    model = lora_model()
    assert static_decode.supports(model)
    prompts = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15]]
    decoder = static_decode.StaticDecoder(model, batch_size=3, max_len=9, window=2, fuse=fuse)
    # per layer: every wrapped projection, nothing else; fused, Q/K/V (with their biases) stacked
    per_layer = ["qkv", "qkv_bias", "o_proj", "gate_proj", "up_proj", "down_proj"] if fuse else ALL_SEVEN
    assert sorted(decoder.lora.buffers) == sorted((i, name) for i in range(2) for name in per_layer)

    @torch.no_grad()
    def expected(seq):
        want = model(input_ids=seq).logits[0, -1].float()
        with model.disable_adapter():
            base = model(input_ids=seq).logits[0, -1].float()
        assert (want - base).abs().max() > 0.1  # the adapter matters: ignoring it would fail the check
        return want

    continuation = torch.tensor([[21, 22, 23], [24, 25, 26], [27, 28, 29]])
    check_decoder_logits(decoder, prompts, continuation, expected)


def test_generator_follows_adapter_updates_in_place_and_the_disabled_adapter():
    model = lora_model()
    static = StaticDecoderGenerator(model, batch_size=4, prompt_bucket=4, length_bucket=8, window=4)
    before = tokens(static.generate(PROMPTS, GREEDY, [EOS], PAD))
    assert before == hf_tokens(model)
    with model.disable_adapter():
        base = hf_tokens(model)
    assert base != before
    pointers = {k: b.data_ptr() for k, b in static.lora.buffers.items()}
    with torch.no_grad():  # an optimizer step on the adapter: in place, same storage
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn_like(p) * 0.3)
    static.sync_weights(model)  # what the trainer calls before each generate
    after = tokens(static.generate(PROMPTS, GREEDY, [EOS], PAD))
    assert after != before and after == hf_tokens(model)
    assert {k: b.data_ptr() for k, b in static.lora.buffers.items()} == pointers  # rewritten in place
    with model.disable_adapter():
        static.sync_weights(model)
        assert tokens(static.generate(PROMPTS, GREEDY, [EOS], PAD)) == base
    static.sync_weights(model)
    assert tokens(static.generate(PROMPTS, GREEDY, [EOS], PAD)) == after


def test_decoders_of_all_batch_sizes_share_one_merged_copy():
    model = lora_model(targets=["q_proj", "down_proj"])
    static = StaticDecoderGenerator(
        model, batch_size=4, prompt_bucket=4, length_bucket=8, window=4, fuse=False
    )
    static.generate(PROMPTS, GREEDY, [EOS], PAD)  # batches of 4 and 1: two decoders
    assert sorted(static.decoders) == [1, 4]
    wrapped = [m.base_layer.weight for n, m in model.named_modules() if n.endswith(("q_proj", "down_proj"))]
    assert static.lora.nbytes() == sum(w.numel() * w.element_size() for w in wrapped)
    for decoder in static.decoders.values():
        assert decoder.lora is static.lora
        assert decoder.weights[0].wq.data_ptr() == static.lora.buffers[(0, "q_proj")].data_ptr()
        assert (
            decoder.weights[0].wk.data_ptr()
            == model.get_decoder().layers[0].self_attn.k_proj.weight.data_ptr()
        )


def test_fused_projections_are_one_copy_shared_by_all_decoders():
    model = lora_model(targets=["q_proj", "down_proj"])
    static = StaticDecoderGenerator(model, batch_size=4, prompt_bucket=4, length_bucket=8, window=4)
    assert tokens(static.generate(PROMPTS, GREEDY, [EOS], PAD)) == hf_tokens(model)
    layers = model.get_decoder().layers
    attn, mlp = layers[0].self_attn, layers[0].mlp
    stacked = [attn.q_proj.base_layer.weight, attn.k_proj.weight, attn.v_proj.weight]
    per_layer = sum(w.numel() * w.element_size() for w in stacked)
    per_layer += sum(b.numel() * b.element_size() for b in (attn.q_proj.base_layer.bias, attn.k_proj.bias))
    per_layer += attn.v_proj.bias.numel() * attn.v_proj.bias.element_size()
    per_layer += mlp.down_proj.base_layer.weight.numel() * mlp.down_proj.base_layer.weight.element_size()
    assert static.lora.nbytes() == len(layers) * per_layer
    for decoder in static.decoders.values():
        w = decoder.weights[0]
        assert decoder.lora is static.lora and w.wq is None and w.wk is None and w.bv is None
        assert w.wqkv.data_ptr() == static.lora.buffers[(0, "qkv")].data_ptr()
        assert w.wg.data_ptr() == mlp.gate_proj.weight.data_ptr()  # not stacked: read in place


def test_merged_adapter_is_not_added_twice():
    model = lora_model()
    want = hf_tokens(model)
    model.merge_adapter()  # W now holds the adapter; PEFT's forward reads W alone
    static = StaticDecoderGenerator(model, batch_size=4, prompt_bucket=4, length_bucket=8, window=4)
    assert tokens(static.generate(PROMPTS, GREEDY, [EOS], PAD)) == want


@pytest.mark.parametrize("kwargs", [{"use_dora": True}, {"lora_bias": True}])
def test_lora_variants_that_are_not_w_plus_ba_are_refused(kwargs):
    model = lora_model(targets=["v_proj"], **kwargs)
    assert not static_decode.supports(model)
    with pytest.raises(ValueError, match="does not support"):
        resolve_backend(model, "static")
    assert resolve_backend(model, "auto") == "hf"
