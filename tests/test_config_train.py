"""Training keys of the config schema: batch-size arithmetic and range checks, with messages showing numbers."""

from __future__ import annotations

import pytest

from endo_rl.core import config
from endo_rl.core.errors import UserError


def test_batch_sizes_divisible_by_world_and_micro_batch():
    base = ["train.prompts_per_step=6", "algo.group_size=4", "train.micro_batch_size=4"]
    assert config.load(None, base, world_size=2).train.prompts_per_step == 6
    with pytest.raises(UserError, match="prompts_per_step=6 is not divisible by the world size 4"):
        config.load(None, base, world_size=4)
    with pytest.raises(UserError, match=r"6 x 4 = 24 sequences .* 2 x 5 = 10"):
        config.load(None, [*base, "train.micro_batch_size=5"], world_size=2)


def test_world_size_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "16")
    with pytest.raises(UserError, match="world size 16"):
        config.load(None, ["train.prompts_per_step=8"])
    monkeypatch.delenv("WORLD_SIZE")
    config.load(None, ["train.prompts_per_step=8"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algo.group_size=1", "'algo.group_size' must be >= 2 for GRPO"),
        ("train.max_steps=0", "'train.max_steps' must be >= 1"),
        ("train.save_every=-1", "'train.save_every' must be >= 0"),
        ("train.max_step=3", "did you mean 'train.max_steps'"),
        ("algo.loss_agg=mean", "expected one of"),
        ("train.on_nonfinite=ignore", "expected one of"),
        ("train.logprob_micro_batch_size=0", "'train.logprob_micro_batch_size' must be >= 1 or null, got 0"),
        (
            "train.logprob_micro_batch_size=-3",
            "'train.logprob_micro_batch_size' must be >= 1 or null, got -3",
        ),
        ("train.logprob_micro_batch_size=2.5", "'train.logprob_micro_batch_size': expected"),
        ("train.logprob_micro_batch_size=many", "'train.logprob_micro_batch_size': expected"),
    ],
)
def test_bad_training_keys_name_the_key(override, message):
    with pytest.raises(UserError, match=message):
        config.load(None, [override], world_size=1)


def test_ppo_allows_single_responses():
    cfg = config.load(None, ["algo.name=ppo", "algo.group_size=1", "train.micro_batch_size=8"], world_size=1)
    assert cfg.algo.group_size == 1
