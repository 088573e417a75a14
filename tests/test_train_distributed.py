"""Two processes (DDP over gloo, on CPU) reproduce the single-process run of recipes/debug/tiny_gpu.yaml.

The same check on GPUs with ZeRO-2/3 is the recipe's header (launch/accelerate/zero{2,3}.yaml).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from endo_rl.rl.data import process_share
from endo_rl.rl.run_log import read_metrics

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "debug" / "tiny_gpu.yaml"
PROMPTS = REPO / "recipes" / "debug" / "arithmetic.jsonl"


@pytest.mark.slow
@pytest.mark.parametrize("mini", [[], ["train.mini_batch_size=4"]], ids=["one_step", "mini_batches"])
def test_two_process_ddp_matches_single_process(tiny_model_dir, tmp_path, mini):
    """Also with two optimizer steps per rollout (mini-batches of 4 = 2 per process x 2 processes)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    args = [f"model.path={tiny_model_dir}", f"data.train={PROMPTS}", "train.max_steps=2", *mini]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    single = subprocess.run(
        [
            sys.executable,
            "-m",
            "endo_rl.cli",
            "train",
            str(RECIPE),
            *args,
            f"output_dir={tmp_path / 'single'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run(
        [
            torchrun,
            "--nproc_per_node",
            "2",
            "-m",
            "endo_rl.cli",
            "train",
            str(RECIPE),
            *args,
            f"output_dir={tmp_path / 'ddp'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a, b = (
        read_metrics(tmp_path / "single" / "metrics.jsonl"),
        read_metrics(tmp_path / "ddp" / "metrics.jsonl"),
    )
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        for name in (
            "loss",
            "policy_loss",
            "value_loss",
            "grad_norm",
            "reward/total",
            "kl",
            "response_length",
        ):
            assert rb[name] == pytest.approx(ra[name], rel=1e-4, abs=1e-6), (ra["step"], name)


@pytest.mark.parametrize("world", [1, 2, 4])
@pytest.mark.parametrize("per_mini", [None, 4, 8])
def test_every_mini_batch_holds_the_same_prompts_whatever_the_process_count(world, per_mini):
    """Cut each process's share into equal local mini-batches: mini-batch j is, over all processes together,
    the step's j-th slice of `per_mini` prompts, as on one process."""
    rows = list(range(100, 116))  # a step of 16 prompts in their global order
    shares = [process_share(rows, world, rank, per_mini) for rank in range(world)]
    assert sorted(sum(shares, [])) == rows
    per = per_mini or len(rows)
    for j in range(len(rows) // per):
        local = per // world
        together = sorted(sum((s[j * local : (j + 1) * local] for s in shares), []))
        assert together == rows[j * per : (j + 1) * per]


def test_a_mini_batch_that_does_not_split_evenly_falls_back_to_contiguous_parts():
    rows = list(range(12))
    assert process_share(rows, 4, 1, 6) == [3, 4, 5]  # 6 prompts per mini-batch over 4 processes: contiguous
    assert process_share(rows, 2, 1, 6) == [3, 4, 5, 9, 10, 11]
    assert process_share(rows, 1, 0, 6) == rows
