"""The estimator table: one entry per `algo.name`, one signature, and no silent fallback to GRPO."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import torch

from endo_rl.core import config
from endo_rl.core.errors import UserError
from endo_rl.rl import algorithms
from endo_rl.rl.advantages import ESTIMATORS, estimator

REPO = Path(__file__).resolve().parents[1]
T, F = True, False


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def test_every_configurable_algorithm_has_an_estimator_and_nothing_else_does():
    names = typing.get_args(typing.get_type_hints(config.AlgoConfig)["name"])
    assert set(ESTIMATORS) == set(names)
    assert estimator("ppo").critic and not estimator("grpo").critic


def test_an_unknown_algorithm_is_an_error_naming_the_key_and_the_choices():
    with pytest.raises(
        UserError, match=r"^config key 'algo.name': unknown algorithm 'dpo'; valid: grpo, ppo$"
    ):
        estimator("dpo")


def test_the_trainer_refuses_an_unknown_algorithm_before_loading_anything(tmp_path):
    cfg = config.load(REPO / "recipes/debug/tiny_cpu.yaml", [f"output_dir={tmp_path}/run"], world_size=1)
    cfg.algo.name = "reinforce"  # past the loader's check, as code building a config could do
    from endo_rl.rl.trainer import Trainer

    with pytest.raises(UserError, match="algo.name.*'reinforce'"):
        Trainer(cfg)
    assert not (tmp_path / "run").exists()


def test_estimators_share_one_signature_and_use_their_own_settings():
    mask = torch.tensor([[T, T, T], [T, T, F], [T, F, F], [T, T, T]])
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [3.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.4, 0.0], [0.2, 0.0, 0.0], [1.0, 1.0, 1.0]])
    algo = config.AlgoConfig(name="ppo", group_size=2)
    algo.ppo.gamma, algo.ppo.lam, algo.ppo.whiten_advantages = 0.9, 0.8, False
    adv, ret = ESTIMATORS["ppo"].advantages(rewards, values, mask, algo, identity)
    want_adv, want_ret = algorithms.gae(rewards, values, mask, 0.9, 0.8)
    torch.testing.assert_close(adv, want_adv)
    torch.testing.assert_close(ret, want_ret)
    algo.ppo.whiten_advantages = True
    whitened, _ = ESTIMATORS["ppo"].advantages(rewards, values, mask, algo, identity)
    torch.testing.assert_close(whitened, algorithms.whiten(want_adv, mask))

    algo = config.AlgoConfig(name="grpo", group_size=2)
    algo.grpo.scale_rewards = False
    adv, ret = ESTIMATORS["grpo"].advantages(rewards, None, mask, algo, identity)
    assert ret is None
    # Dr. GRPO: sequence reward minus its group's mean, on every token of the response
    seq = rewards.sum(-1)
    centred = torch.stack(
        [seq[0] - seq[:2].mean(), seq[1] - seq[:2].mean(), seq[2] - seq[2:].mean(), seq[3] - seq[2:].mean()]
    )
    torch.testing.assert_close(adv, torch.where(mask, centred[:, None], 0.0))


def test_whitening_uses_the_moments_summed_over_processes():
    """`reduce` is how the estimator sees the other ranks: doubling every moment leaves mean and std alone, a
    reduce that adds another rank's different values changes them."""
    mask = torch.ones(2, 3, dtype=torch.bool)
    rewards, values = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]]), torch.zeros(2, 3)
    algo = config.AlgoConfig(name="ppo", group_size=1)
    alone, _ = ESTIMATORS["ppo"].advantages(rewards, values, mask, algo, identity)
    twin, _ = ESTIMATORS["ppo"].advantages(rewards, values, mask, algo, lambda m: 2 * m)
    torch.testing.assert_close(alone, twin)
    other = torch.tensor([6.0, 60.0, 900.0], dtype=torch.float64)
    shifted, _ = ESTIMATORS["ppo"].advantages(rewards, values, mask, algo, lambda m: m + other)
    assert not torch.allclose(alone, shifted)
