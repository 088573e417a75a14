"""A model loaded from GGUF (dequantized) saves in Hugging Face format and reloads to the same logits: the
final export of a trained GGUF model (SmolLM2, BENCHMARKS.md section 8) failed here before."""

from __future__ import annotations

import torch

from endo_rl.core.models import load_causal_lm


def test_gguf_model_saves_and_reloads_the_same(smollm_gguf, tmp_path):
    model = load_causal_lm(str(smollm_gguf))
    model.save_pretrained(tmp_path / "hf")
    assert "quantization_config" not in (tmp_path / "hf" / "config.json").read_text()
    again = load_causal_lm(str(tmp_path / "hf"), dtype="float32")
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits)
