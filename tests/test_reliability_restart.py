"""Restarting a run: a changed config is applied knowingly or refused by name, a broken newest checkpoint is
named and skipped, a missing RNG file is said out loud, NaN/Inf weights are never saved, and one output_dir
serves one run at a time (the lock).

In process with the tiny Qwen2 of conftest and recipes/debug/tiny_cpu.yaml. The real two-process lock test is
slow (two CLI processes); its fast twin is a row of tests/test_reliability_inputs.py (a live pid in .lock).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from endo_rl.core import config
from endo_rl.core.errors import UserError
from endo_rl.rl import checkpoint, run_lock
from endo_rl.rl.nonfinite import NonFiniteError
from endo_rl.rl.run_log import read_metrics
from endo_rl.rl.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "debug" / "tiny_cpu.yaml"
PROMPTS = REPO / "recipes" / "debug" / "arithmetic.jsonl"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}


def tiny_cfg(model_dir: Path, out: Path, *overrides: str) -> config.ExperimentConfig:
    fixed = [f"model.path={model_dir}", f"output_dir={out}", f"data.train={PROMPTS}", "logging.wandb=false"]
    return config.load(RECIPE, [*fixed, "train.max_steps=2", "train.keep_last=2", *overrides], world_size=1)


@pytest.fixture(scope="module")
def two_steps(tiny_model_dir, tmp_path_factory) -> Path:
    """A finished 2-step run with step-1 and step-2 (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("two_steps") / "run"
    Trainer(tiny_cfg(tiny_model_dir, out)).fit()
    return out


def copy_run(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "run"))


# ----- a changed config -----------------------------------------------------------------------------------


def test_resume_applies_a_new_learning_rate_and_the_saved_config_says_so(
    tiny_model_dir, two_steps, tmp_path, capsys
):
    out = copy_run(two_steps, tmp_path)
    trainer = Trainer(tiny_cfg(tiny_model_dir, out, "resume=true", "train.max_steps=3", "train.lr=1e-5"))
    printed = capsys.readouterr().out
    assert "resume: applying the changed train.lr: 0.001 -> 1e-05" in printed
    assert "resume: applying the changed train.max_steps: 2 -> 3" in printed
    # the restored optimizer would bring back 1e-3: the new value is in every group
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [1e-5, 1e-5]
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["lr"] == 1e-5
    trainer.fit()
    assert read_metrics(out / "metrics.jsonl")[-1]["lr"] == pytest.approx(1e-5)
    saved = json.loads((checkpoint.checkpoints_dir(out) / "step-3" / checkpoint.STATE_FILE).read_text())
    assert saved["config"]["train"]["lr"] == 1e-5


def test_resume_refuses_changes_that_alter_the_run_naming_each_key(tiny_model_dir, two_steps, tmp_path):
    out = copy_run(two_steps, tmp_path)
    same_shape = Path(shutil.copytree(tiny_model_dir, tmp_path / "other_model"))  # another path, same shapes
    before = (out / "config.yaml").read_text()
    with pytest.raises(UserError) as err:
        Trainer(tiny_cfg(same_shape, out, "resume=true", "algo.name=grpo", "train.max_steps=3"))
    assert str(err.value) == (
        f"resume=true: {checkpoint.checkpoints_dir(out) / 'step-2'} was trained with a different "
        f"algo.name ('ppo' in the checkpoint, now 'grpo'), model.path ({str(tiny_model_dir)!r} in the "
        f"checkpoint, now {str(same_shape)!r}); these change what the run means: restore them, or start a new "
        "run in another output_dir"
    )
    assert (out / "config.yaml").read_text() == before  # nothing rewritten by the refused resume


# ----- broken checkpoints ---------------------------------------------------------------------------------


def fake_checkpoint(path: Path) -> Path:
    """The files accelerate writes, small: weights, optimizer, scheduler, RNG, trainer state."""
    path.mkdir(parents=True)
    save_file({"w": torch.ones(64)}, str(path / "model.safetensors"))
    torch.save({"state": {0: {"exp_avg": torch.ones(64)}}}, path / "optimizer.bin")
    torch.save({"last_epoch": 1}, path / "scheduler.bin")
    torch.save({"random_state": (3, (1, 2), None)}, path / "random_states_0.pkl")
    (path / checkpoint.STATE_FILE).write_text(json.dumps({"step": 1, "skipped_steps": 0, "data": {}}))
    return path


def truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


BREAKS = {
    "model.safetensors": (truncate, r"model.safetensors: truncated \(\d+ bytes, the header describes \d+\)"),
    "optimizer.bin": (truncate, r"optimizer.bin: unreadable \(.+\)"),
    "scheduler.bin": (lambda f: f.write_bytes(b""), r"scheduler.bin: unreadable \(.+\)"),
    "random_states_0.pkl": (truncate, r"random_states_0.pkl: unreadable \(.+\)"),
    "trainer_state.json": (lambda f: f.write_text('{"step": 1,'), r"trainer_state.json: unreadable \(.+\)"),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_each_broken_file_is_named(tmp_path, name):
    ckpt = fake_checkpoint(tmp_path / "step-1")
    assert checkpoint.broken_files(ckpt) == []
    breaker, pattern = BREAKS[name]
    breaker(ckpt / name)
    problems = checkpoint.broken_files(ckpt)
    assert len(problems) == 1 and __import__("re").fullmatch(pattern, problems[0]), problems


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.bin", "trainer_state.json"])
def test_resume_names_a_broken_newest_checkpoint_and_falls_back(
    tiny_model_dir, two_steps, tmp_path, capsys, name
):
    out = copy_run(two_steps, tmp_path)
    root = checkpoint.checkpoints_dir(out)
    BREAKS[name][0](root / "step-2" / name)
    trainer = Trainer(tiny_cfg(tiny_model_dir, out, "resume=true"))
    printed = capsys.readouterr().out
    assert f"warning: checkpoint {root / 'step-2'} is broken ({name}: " in printed
    assert f"resumed from {root / 'step-1'} (step 1)" in printed
    assert trainer.step == 1
    if name == "model.safetensors":  # one variant runs on: step 2 is redone and its checkpoint replaced
        trainer.fit()
        assert checkpoint.broken_files(root / "step-2") == []


def test_no_intact_checkpoint_is_an_error(tiny_model_dir, two_steps, tmp_path):
    out = copy_run(two_steps, tmp_path)
    for step in checkpoint.complete_checkpoints(out):
        truncate(step / "model.safetensors")
    with pytest.raises(UserError, match=r"^no intact checkpoint in .*checkpoints \(every step-N is broken"):
        Trainer(tiny_cfg(tiny_model_dir, out, "resume=true"))


def test_missing_random_states_is_said_out_loud(tiny_model_dir, two_steps, tmp_path, capsys):
    out = copy_run(two_steps, tmp_path)
    step2 = checkpoint.checkpoints_dir(out) / "step-2"
    (step2 / "random_states_0.pkl").unlink()
    trainer = Trainer(tiny_cfg(tiny_model_dir, out, "resume=true"))
    assert trainer.step == 2
    assert (
        f"warning: checkpoint {step2} has no random_states_0.pkl: resuming with fresh random states, so this "
        "run will not reproduce an uninterrupted one"
    ) in capsys.readouterr().out


# ----- NaN/Inf weights --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [("lr", float("inf")), ("max_grad_norm", float("nan"))])
def test_nonfinite_weights_stop_the_run_and_are_never_checkpointed(tiny_model_dir, tmp_path, key, value):
    """The config refuses these values (rows of the bad-input table); set behind its back, the weight
    guard still stops step 1 after the optimizer step, before anything is saved."""
    cfg = tiny_cfg(tiny_model_dir, tmp_path / "run", "train.on_nonfinite=skip")
    setattr(cfg.train, key, value)
    with pytest.raises(
        NonFiniteError, match=r"^non-finite values \(NaN/Inf\) in the weights after the optimizer "
    ):
        Trainer(cfg).fit()
    assert checkpoint.complete_checkpoints(tmp_path / "run") == []
    assert not (checkpoint.checkpoints_dir(tmp_path / "run")).exists()


def test_a_nan_weight_is_not_saved(tiny_model_dir, tmp_path):
    trainer = Trainer(tiny_cfg(tiny_model_dir, tmp_path / "run"))
    trainer.step = 1
    with torch.no_grad():
        trainer.accelerator.unwrap_model(trainer.model).lm.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"in the weights before saving step 1 \(lm.lm_head.weight\)"):
        trainer.save()
    assert not checkpoint.checkpoints_dir(tmp_path / "run").exists()


# ----- one run per output_dir -------------------------------------------------------------------------------


def write_lock(out: Path, host: str, pid: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / run_lock.LOCK_FILE).write_text(f"{host} {pid}\n")


def test_a_live_owner_keeps_the_lock(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path, socket.gethostname(), other.pid)
        with pytest.raises(UserError) as err:
            checkpoint.check_output_dir(str(tmp_path), resume=True)
        assert str(err.value) == (
            f"output_dir {tmp_path} is in use by another run (pid {other.pid}, lock file {tmp_path / '.lock'}): "
            "wait for it to finish or choose another output_dir"
        )
    finally:
        other.kill()
        other.wait()
    # the owner is gone: its lock is stale and taken over
    checkpoint.check_output_dir(str(tmp_path), resume=True)
    assert (tmp_path / ".lock").read_text() == f"{socket.gethostname()} {os.getpid()}\n"
    run_lock.release(tmp_path)
    assert not (tmp_path / ".lock").exists()


def test_a_lock_from_another_host_is_refused_with_the_file_to_delete(tmp_path):
    write_lock(tmp_path, "some-other-host", 1234)
    with pytest.raises(
        UserError, match=r"locked by a run on host some-other-host \(pid 1234\); if no run is using"
    ):
        checkpoint.check_output_dir(str(tmp_path), resume=False)


@pytest.mark.slow
def test_two_cli_runs_on_one_output_dir(tiny_model_dir, tmp_path):
    """The second `endo-rl train` on a busy output_dir exits 2; the first finishes with one row per step."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "endo_rl.cli", "train", str(RECIPE), f"model.path={tiny_model_dir}",
            f"output_dir={out}", "train.max_steps=3"]  # fmt: skip
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, cwd=REPO)
    deadline = time.monotonic() + 300
    while not (out / run_lock.LOCK_FILE).exists():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    second = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert second.returncode == 2, second.stderr[-2000:]
    assert (
        f"endo-rl train: error: output_dir {out} is in use by another run (pid {first.pid}" in second.stderr
    )
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err.decode()[-2000:]
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
    assert not (out / run_lock.LOCK_FILE).exists()
