"""Several CPU processes: the documented launch lines really start two processes that train together (each
rank writes its own random_states_<rank>.pkl into the checkpoint), and the launch line that would silently run
one process (`accelerate launch --cpu --num_processes 2`) is refused with exit 2.

That two DDP processes reproduce the single-process run is tests/test_train_distributed.py (slow).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPE = str(REPO / "recipes" / "debug" / "tiny_cpu.yaml")
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
ENV.pop("ACCELERATE_USE_CPU", None)  # the launch lines must work without it
ENV.pop("WORLD_SIZE", None)


def launcher(name: str) -> str:
    path = shutil.which(name, path=str(BIN))
    if path is None:
        pytest.skip(f"{name} is not installed next to {sys.executable}")
    return path


def test_accelerate_cpu_with_two_processes_is_refused(tmp_path):
    argv = [launcher("accelerate"), "launch", "--cpu", "--num_processes", "2", "-m", "endo_rl.cli", "train",
            RECIPE, "model.path=/never/loaded", f"output_dir={tmp_path / 'run'}"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    assert proc.returncode != 0
    assert (
        "endo-rl train: error: `accelerate launch --cpu --num_processes 2` starts only one process; for 2 CPU "
        "processes use `torchrun --nproc_per_node 2 -m endo_rl.cli train ...` or `accelerate launch --multi_gpu "
        "--num_processes 2 -m endo_rl.cli train ...` (works without GPUs)"
    ) in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


LAUNCH_LINES = {
    "torchrun": ["torchrun", "--nproc_per_node", "2"],
    "accelerate --multi_gpu": ["accelerate", "launch", "--multi_gpu", "--num_processes", "2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LAUNCH_LINES))
def test_documented_launch_lines_start_two_cpu_processes(tiny_model_dir, tmp_path, name):
    tool, *flags = LAUNCH_LINES[name]
    out = tmp_path / "run"
    argv = [launcher(tool), *flags, "-m", "endo_rl.cli", "train", RECIPE, f"model.path={tiny_model_dir}",
            f"output_dir={out}", "train.max_steps=1"]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    step1 = out / "checkpoints" / "step-1"
    assert sorted(p.name for p in step1.glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
