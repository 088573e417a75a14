"""`deterministic=true`: the switch sets torch's process-global reproducibility flags, only when asked.

The flags matter on GPUs; on this CPU machine the tests check what can be checked here: the flags and the
environment variable are set (and untouched when the key is off), the key is validated and allowed to change
on resume, and a training run with the switch on works and repeats itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch._inductor.config as inductor_config
from safetensors.torch import load_file
from test_train import tiny_cfg

from endo_rl.core import config
from endo_rl.core.errors import UserError
from endo_rl.rl import distributed, resume
from endo_rl.rl.determinism import CUBLAS_WORKSPACE, make_deterministic
from endo_rl.rl.run_log import read_metrics
from endo_rl.rl.trainer import run


def flags() -> dict:
    return {
        "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "inductor": inductor_config.deterministic,
        "algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "fill_uninitialized": torch.utils.deterministic.fill_uninitialized_memory,
    }


@pytest.fixture
def global_state(monkeypatch):
    """Process-global flags: start each test from the defaults and put the previous values back after it."""
    saved = flags()
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)  # monkeypatch restores the old value
    inductor_config.deterministic = False
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, False
    torch.utils.deterministic.fill_uninitialized_memory = True  # torch's default
    yield
    inductor_config.deterministic = saved["inductor"]
    torch.use_deterministic_algorithms(saved["algorithms"], warn_only=saved["warn_only"])
    torch.backends.cudnn.deterministic = saved["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = saved["cudnn_benchmark"]
    torch.utils.deterministic.fill_uninitialized_memory = saved["fill_uninitialized"]


ON = {
    "cublas": CUBLAS_WORKSPACE,
    "inductor": True,
    "algorithms": True,
    "warn_only": False,  # strict: with warn_only the attention backwards stay nondeterministic
    "cudnn_deterministic": True,
    "cudnn_benchmark": False,
    "fill_uninitialized": False,  # no NaN-fill of every new tensor: nothing reads uninitialized memory
}
OFF = {**{k: None if k == "cublas" else False for k in ON}, "fill_uninitialized": True}


def test_make_deterministic_sets_every_flag(global_state):
    assert flags() == OFF
    make_deterministic()
    assert flags() == ON


def test_a_cublas_setting_the_user_exported_is_kept(global_state, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    make_deterministic()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


@pytest.mark.parametrize("on", [False, True])
def test_seeding_switches_only_when_asked(global_state, on):
    torch.backends.cudnn.benchmark = True  # a user's choice the off switch must leave alone
    distributed.seed_everything(3, 0, on)
    assert flags() == (ON if on else {**OFF, "cudnn_benchmark": True})


def test_the_key_defaults_off_and_is_type_checked():
    assert config.load(None, [], world_size=1).deterministic is False
    assert config.load(None, ["deterministic=true"], world_size=1).deterministic is True
    with pytest.raises(UserError, match=r"config key 'deterministic': expected bool, got str 'fast'"):
        config.load(None, ["deterministic=fast"], world_size=1)


def test_resume_applies_a_changed_switch_and_accepts_checkpoints_without_it(tmp_path):
    saved = {"seed": 0, "deterministic": False, "train": {"lr": 1e-3}}
    now = {"seed": 0, "deterministic": True, "train": {"lr": 1e-3}}
    assert resume.check(resume.changes(saved, now), tmp_path) == ["deterministic: False -> True"]
    older = {"seed": 0, "train": {"lr": 1e-3}}  # written before the key existed
    assert resume.check(resume.changes(older, now), tmp_path) == ["deterministic: None -> True"]
    with pytest.raises(UserError, match=r"different seed \(0 in the checkpoint, now 1\)"):
        resume.check(resume.changes(saved, {**now, "seed": 1}), tmp_path)


FAST = ("train.max_steps=1", "reward.correctness.weight=0")  # one PPO step, no grader process


def measured(out: Path) -> list[dict]:
    """The run's metrics without the wall-clock ones (time/..., step_time_s, tokens_per_s)."""
    rows = read_metrics(out / "metrics.jsonl")
    return [{k: v for k, v in r.items() if not (k.startswith("time/") or k.endswith("_s"))} for r in rows]


def test_training_with_the_switch_on_runs_and_repeats(global_state, tiny_model_dir, tmp_path):
    """Two runs, same seed: the same metrics and final weights (CPU is deterministic anyway: this checks that
    the trainer applies the switch and that training still works with it)."""
    results = []
    for name in ("a", "b"):
        out = tmp_path / name
        final = run(tiny_cfg(tiny_model_dir, out, *FAST, "deterministic=true"))
        assert torch.are_deterministic_algorithms_enabled()  # the trainer turned the switch on
        results.append((measured(out), load_file(str(Path(final) / "model.safetensors"))))
    (rows_a, weights_a), (rows_b, weights_b) = results
    assert [r["step"] for r in rows_a] == [1] and "loss" in rows_a[0]
    assert rows_a == rows_b
    assert weights_a.keys() == weights_b.keys()
    initial = load_file(str(tiny_model_dir / "model.safetensors"))
    assert not torch.equal(initial["lm_head.weight"], weights_a["lm_head.weight"])  # it trained
    assert [k for k in weights_a if not torch.equal(weights_a[k], weights_b[k])] == []
