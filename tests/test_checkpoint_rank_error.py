"""A checkpoint write error on one rank of two (DDP over gloo, on CPU) stops both ranks with one message, and
the previous checkpoint stays loadable: the run resumes from it to the same end as an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "debug" / "tiny_gpu.yaml"
PROMPTS = REPO / "recipes" / "debug" / "arithmetic.jsonl"

# rank 1 (only) fails to write its RNG state file into step 2's checkpoint: a full disk on its node
FAULTY_RANK = """
import errno, os, sys, torch
real_save = torch.save
def full_disk(obj, f, *args, **kwargs):
    if os.environ.get("RANK") == "1" and ".tmp-step-2" in str(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
    return real_save(obj, f, *args, **kwargs)
torch.save = full_disk
from endo_rl.cli import main
sys.exit(main())
"""


def torchrun(script: Path | None, out: Path, model_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    target = [str(script)] if script else ["-m", "endo_rl.cli"]
    args = ["train", str(RECIPE), f"model.path={model_dir}", f"data.train={PROMPTS}", f"output_dir={out}"]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [
        launcher,
        "--nproc_per_node",
        "2",
        *target,
        *args,
        "train.max_steps=3",
        "train.save_every=1",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_write_error_on_one_rank_stops_every_rank_with_one_message(tiny_model_dir, tmp_path):
    script = tmp_path / "faulty_rank.py"
    script.write_text(FAULTY_RANK)
    out = tmp_path / "run"
    failed = torchrun(script, out, tiny_model_dir)
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if "endo-rl train: error:" in line]
    ckpts = out / "checkpoints"
    assert errors == [
        f"endo-rl train: error: cannot write checkpoint {ckpts / 'step-2'}: rank 1: No space left on device; "
        f"the previous checkpoint {ckpts / 'step-1'} is intact and resume=true continues from it"
    ], failed.stderr[-3000:]
    # no traceback from our processes (torchrun itself reports its failed children with one)
    assert not [line for line in failed.stderr.splitlines() if 'File "' in line and "endo_rl" in line]
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-1"]  # no temp dir, no half checkpoint
    resumed = torchrun(None, out, tiny_model_dir, "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = torchrun(None, tmp_path / "straight", tiny_model_dir)
    assert straight.returncode == 0, straight.stderr[-3000:]
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-3" / "model.safetensors"))
    b = load_file(str(ckpts / "step-3" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
