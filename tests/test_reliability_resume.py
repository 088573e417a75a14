"""Exact resume after a real SIGKILL, atomic checkpoints, keep_last, and a disk that fills up while saving.

Each kill test runs `python -m endo_rl.cli train recipes/debug/tiny_cpu.yaml` as a subprocess, polls the
checkpoint directory until the chosen point is reached, sends SIGKILL, resumes with `resume=true`, and
compares OUTPUT_DIR/final/model.safetensors bitwise with an uninterrupted run (CPU, OMP_NUM_THREADS=1).
The in-process resume test without a kill is tests/test_train.py::test_resume_reproduces_the_uninterrupted_run_bitwise.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from endo_rl.rl import checkpoint

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "debug" / "tiny_cpu.yaml"
PROMPTS = REPO / "recipes" / "debug" / "arithmetic.jsonl"
STEPS = 3
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}


def train_args(model_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "endo_rl.cli", "train", str(RECIPE), f"model.path={model_dir}",
        f"output_dir={out}", f"data.train={PROMPTS}", f"train.max_steps={STEPS}", "train.save_every=1",
        "train.keep_last=2", "logging.wandb=false", *extra,
    ]  # fmt: skip


def start(model_dir: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        train_args(model_dir, out, *extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=ENV,
        cwd=REPO,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]


def kill_when(proc: subprocess.Popen, reached: Callable[[], bool], timeout: float = 300) -> bool:
    """SIGKILL `proc` as soon as `reached()` holds (polled every millisecond). False if it exited first."""
    deadline = time.monotonic() + timeout
    while not reached():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    return True


def ckpt(out: Path, name: str) -> Callable[[], bool]:
    """The checkpoint dir `name` exists (`step-N` complete once renamed; `.tmp-step-N` mid-save)."""
    path = checkpoint.checkpoints_dir(out) / name
    return path.exists


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "final" / "model.safetensors"))


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


@pytest.fixture(scope="module")
def straight_run(tiny_model_dir, tmp_path_factory) -> Path:
    """The uninterrupted run every killed run is compared with (started once, finished lazily)."""
    out = tmp_path_factory.mktemp("straight")
    finish(start(tiny_model_dir, out))
    return out


def test_sigkill_mid_save_then_resume_is_bitwise_identical(tiny_model_dir, tmp_path):
    """Default-suite variant: one kill, inside the save of step 2 (the uninterrupted run runs alongside)."""
    straight_out, killed_out = tmp_path / "straight", tmp_path / "killed"
    straight = start(tiny_model_dir, straight_out)
    killed = start(tiny_model_dir, killed_out)
    assert kill_when(killed, ckpt(killed_out, ".tmp-step-2"))
    # the kill left either the temp dir or (if the rename won the race) a complete step-2: never a half step-2
    done = [p.name for p in checkpoint.complete_checkpoints(killed_out)]
    assert done in (["step-1"], ["step-1", "step-2"])
    for p in checkpoint.checkpoints_dir(killed_out).glob("step-*"):
        assert (p / checkpoint.STATE_FILE).is_file(), f"{p} was renamed before it was complete"
    finish(start(tiny_model_dir, killed_out, "resume=true"))
    finish(straight)
    assert_bitwise_equal(final_weights(straight_out), final_weights(killed_out))
    # the temp dir of the killed save was replaced by the real checkpoint, and only keep_last=2 remain
    names = sorted(p.name for p in checkpoint.checkpoints_dir(killed_out).iterdir())
    assert names == ["step-2", "step-3"]


KILL_POINTS = {
    "after step 1": ["step-1"],
    "after step 2": ["step-2"],
    "mid-save of step 1 (nothing complete yet)": [".tmp-step-1"],
    "mid-save of step 3 (the last)": [".tmp-step-3"],
    "three kills in a row: after step 1, mid-save 2, after step 3": ["step-1", ".tmp-step-2", "step-3"],
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_at_each_point_then_resume_is_bitwise_identical(
    tiny_model_dir, straight_run, tmp_path, point
):
    out = tmp_path / "killed"
    for i, name in enumerate(KILL_POINTS[point]):
        assert kill_when(start(tiny_model_dir, out, *(["resume=true"] if i else [])), ckpt(out, name))
    finish(start(tiny_model_dir, out, "resume=true"))
    assert_bitwise_equal(final_weights(straight_run), final_weights(out))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_time_then_resume_is_bitwise_identical(
    tiny_model_dir, straight_run, tmp_path, seed
):
    """Kill at a random moment once training has started (possibly after the run ended: then resume is a no-op)."""
    delay = random.Random(seed).uniform(0.0, 4.0)
    out = tmp_path / "killed"
    proc = start(tiny_model_dir, out)
    t0: list[float] = []

    def reached() -> bool:
        if not t0 and (out / "config.yaml").exists():  # written once the models are loaded
            t0.append(time.monotonic())
        return bool(t0) and time.monotonic() - t0[0] >= delay

    killed = kill_when(proc, reached)
    if not killed:
        finish(proc)
    finish(start(tiny_model_dir, out, "resume=true"))
    assert_bitwise_equal(final_weights(straight_run), final_weights(out))


# ----- in process: disk full, keep_last, resume picks the newest complete checkpoint ---------------------


def tiny_cfg(model_dir: Path, out: Path, *overrides: str):
    from endo_rl.core import config

    fixed = [f"model.path={model_dir}", f"output_dir={out}", f"data.train={PROMPTS}", "logging.wandb=false"]
    return config.load(RECIPE, [*fixed, f"train.max_steps={STEPS}", *overrides], world_size=1)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    """torch.save (the optimizer file) fails with ENOSPC in step 2's save, after writing part of the file."""
    from endo_rl.core.errors import UserError
    from endo_rl.rl.trainer import run

    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if ".tmp-step-2" in str(f):
            Path(f).write_bytes(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    with pytest.raises(UserError) as err:
        run(tiny_cfg(tiny_model_dir, out))
    step1 = checkpoint.checkpoints_dir(out) / "step-1"
    assert str(err.value) == (
        f"cannot write checkpoint {checkpoint.checkpoints_dir(out) / 'step-2'}: No space left on device; "
        f"the previous checkpoint {step1} is intact and resume=true continues from it"
    )
    assert sorted(p.name for p in checkpoint.checkpoints_dir(out).iterdir()) == ["step-1"]  # no temp left
    monkeypatch.setattr(torch, "save", real_save)
    resumed = run(tiny_cfg(tiny_model_dir, out, "resume=true"))
    straight = run(tiny_cfg(tiny_model_dir, tmp_path / "straight", "train.save_every=0"))
    assert_bitwise_equal(load_file(str(straight / "model.safetensors")), final_weights(out))
    assert resumed == out / "final"


def test_keep_last_and_resume_picks_the_newest_complete_checkpoint(tiny_model_dir, tmp_path, capsys):
    from endo_rl.rl.trainer import Trainer

    out = tmp_path / "run"
    Trainer(tiny_cfg(tiny_model_dir, out, "train.keep_last=1")).fit()
    root = checkpoint.checkpoints_dir(out)
    assert sorted(p.name for p in root.iterdir()) == ["step-3"]
    # debris a crash could leave: a newer temp dir and a newer step dir without its state file
    (root / ".tmp-step-5").mkdir()
    (root / "step-4").mkdir()
    (root / "step-4" / "model.safetensors").write_bytes(b"torn")
    # and a half-deleted old checkpoint (a kill while pruning): out of the step-N namespace, so never picked
    (root / ".old-step-2").mkdir()
    (root / ".old-step-2" / checkpoint.STATE_FILE).write_text("{}")
    trainer = Trainer(tiny_cfg(tiny_model_dir, out, "resume=true", "train.max_steps=4", "train.keep_last=1"))
    assert trainer.step == 3 and f"resumed from {root / 'step-3'} (step 3)" in capsys.readouterr().out
    trainer.fit()
    assert sorted(p.name for p in root.iterdir()) == ["step-4"]  # the debris is cleaned up by the next save
    assert (root / "step-4" / checkpoint.STATE_FILE).is_file()
