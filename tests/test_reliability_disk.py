"""A really full disk: training writes into a small tmpfs mounted for the test (`mount -t tmpfs -o size=...`).

Nothing is injected: safetensors, torch.save and the OS fail the way they do when the file system is full
(SafetensorError, RuntimeError "file write failed", OSError ENOSPC). The tiny Qwen2 of conftest makes a
117 MB checkpoint (39 MB weights + 78 MB AdamW state) and a 50 MB final export, so a 2 MB file system fails
the first save, 200 MB fits step 1 but not step 2, and 150 MB fits the checkpoint but not `final/`.
The tests skip (saying why) where mounting is not allowed (not root, or no CAP_SYS_ADMIN in a container).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from safetensors.torch import load_file

from endo_rl.rl import checkpoint

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "recipes" / "debug" / "tiny_cpu.yaml")
PROMPTS = str(REPO / "recipes" / "debug" / "arithmetic.jsonl")


@contextlib.contextmanager
def tmpfs(where: Path, size: str):
    """A fresh tmpfs of `size` mounted at `where` for the duration of the block."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root: the real full-disk tests cannot run here")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", f"endo-rl-test-{uuid.uuid4().hex[:6]}", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the real full-disk tests cannot run")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def cfg_for(model_dir: Path, out: Path, *overrides: str):
    from endo_rl.core import config

    fixed = [f"model.path={model_dir}", f"output_dir={out}", f"data.train={PROMPTS}", "logging.wandb=false"]
    return config.load(RECIPE, [*fixed, *overrides], world_size=1)


def test_cli_on_a_full_disk_exits_2_naming_the_checkpoint(tiny_model_dir, tmp_path, capsys):
    """2 MB: the first checkpoint cannot be written. One error line, exit 2, no temp dir left."""
    from endo_rl.cli import main

    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        out = mnt / "run"
        rc = main(["train", RECIPE, f"model.path={tiny_model_dir}", f"output_dir={out}", "train.max_steps=1"])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if ": error: " in line]
        assert rc == 2, err[-3000:]
        assert "Traceback" not in err
        assert len(errors) == 1 and re.fullmatch(
            rf"endo-rl train: error: cannot write checkpoint {re.escape(str(out / 'checkpoints' / 'step-1'))}: "
            r"No space left on device \(\d+ KiB free on that file system\); there is no earlier checkpoint",
            errors[0],
        ), errors
        assert list((out / "checkpoints").iterdir()) == []  # no .tmp-step-1 debris
        assert not (out / ".lock").exists()  # the failed run released output_dir


def test_full_disk_at_step_2_keeps_step_1_loadable_and_resumable(tiny_model_dir, tmp_path):
    """200 MB: step 1 is saved, step 2 fills the disk. step-1 stays intact and the run resumes from it (that
    such a resume is bitwise the uninterrupted run: test_reliability_resume.py)."""
    from endo_rl.core.errors import UserError
    from endo_rl.rl.trainer import run

    with tmpfs(tmp_path / "mnt", "200m") as mnt:
        out = mnt / "run"
        with pytest.raises(UserError) as err:
            run(cfg_for(tiny_model_dir, out, "train.max_steps=2", "train.keep_last=2"))
        root = checkpoint.checkpoints_dir(out)
        assert str(err.value).startswith(
            f"cannot write checkpoint {root / 'step-2'}: No space left on device"
        )
        assert str(err.value).endswith(
            f"the previous checkpoint {root / 'step-1'} is intact and resume=true continues from it"
        )
        assert sorted(p.name for p in root.iterdir()) == ["step-1"]
        assert checkpoint.broken_files(root / "step-1") == []
        moved = tmp_path / "moved"  # the user frees space: here, by moving the run to a roomier disk
        shutil.copytree(out, moved)
    resumed = run(cfg_for(tiny_model_dir, moved, "train.max_steps=2", "resume=true"))
    assert sorted(p.name for p in checkpoint.checkpoints_dir(moved).iterdir()) == ["step-1", "step-2"]
    assert load_file(str(resumed / "model.safetensors"))  # the export of the resumed run reads back


def test_full_disk_during_the_final_export_leaves_no_half_written_final(tiny_model_dir, tmp_path):
    """150 MB: the step-1 checkpoint fits, `final/` does not. No final/ nor .tmp-final/; resume exports it."""
    from endo_rl.core.errors import UserError
    from endo_rl.rl.trainer import run

    with tmpfs(tmp_path / "mnt", "150m") as mnt:
        out = mnt / "run"
        with pytest.raises(UserError) as err:
            run(cfg_for(tiny_model_dir, out, "train.max_steps=1", "train.keep_last=1"))
        step1 = checkpoint.checkpoints_dir(out) / "step-1"
        assert str(err.value).startswith(f"cannot write the final export {out / 'final'}: No space left")
        assert f"the trained weights are in checkpoint {step1}" in str(err.value)
        assert not (out / "final").exists() and not (out / ".tmp-final").exists()
        assert checkpoint.broken_files(step1) == []
        moved = tmp_path / "moved"
        shutil.copytree(out, moved)
    final = run(cfg_for(tiny_model_dir, moved, "train.max_steps=1", "resume=true"))
    assert {p.name for p in final.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
