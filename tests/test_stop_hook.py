"""The benchmark stop-token hook (bench/stop_hook.py) and the ENDO_RL_MODEL_PLUGIN switch that installs it."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_qwen

from endo_rl.core.errors import UserError
from endo_rl.core.models import load_causal_lm

STOP = [151643, 151645]


def test_plugin_installs_the_hook_and_each_stop_token_gets_probability_p(tmp_path, monkeypatch):
    model = make_tiny_qwen(hidden=64)
    with torch.no_grad():  # near-Gaussian logits with std ~1, as a random-init 7B model has
        model.lm_head.weight.normal_(0, 1 / 8)
    model.save_pretrained(tmp_path)
    monkeypatch.setenv("ENDO_RL_MODEL_PLUGIN", "bench.stop_hook:install")
    monkeypatch.setenv("ENDO_RL_STOP_P", str(1 / 256))
    hooked = load_causal_lm(str(tmp_path))
    ids = torch.randint(0, 150000, (8, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        probs = hooked(input_ids=ids).logits.double().softmax(-1)[..., STOP]
    # log(pV) + s^2/2 is exact for Gaussian logits: each stop token ~p, within the sampling noise of 152k logits
    assert probs.mean().item() == pytest.approx(1 / 256, rel=0.15)
    monkeypatch.delenv("ENDO_RL_MODEL_PLUGIN")
    with torch.no_grad():
        plain = load_causal_lm(str(tmp_path))(input_ids=ids).logits.double().softmax(-1)[..., STOP]
    assert plain.mean().item() < 1e-4  # without the hook: ~1/152k


def test_a_bad_plugin_is_a_user_error(tmp_path, monkeypatch):
    make_tiny_qwen(hidden=16).save_pretrained(tmp_path)
    monkeypatch.setenv("ENDO_RL_MODEL_PLUGIN", "no_such_module:install")
    with pytest.raises(UserError, match="ENDO_RL_MODEL_PLUGIN='no_such_module:install': cannot import it"):
        load_causal_lm(str(tmp_path))
