"""`endo-rl train` as a user runs it: a subprocess of the installed console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENDO_RL = str(Path(sys.executable).parent / "endo-rl")
RECIPE = str(REPO / "recipes" / "debug" / "tiny_cpu.yaml")
PROMPTS = REPO / "recipes" / "debug" / "arithmetic.jsonl"


def train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ENDO_RL, "train", *args], capture_output=True, text=True, timeout=600)


def test_cli_trains_one_step(tiny_model_dir, tmp_path):
    proc = train(
        RECIPE,
        f"model.path={tiny_model_dir}",
        f"output_dir={tmp_path}",
        f"data.train={PROMPTS}",
        "train.max_steps=1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"final policy: {tmp_path / 'final'}" in proc.stdout
    assert (tmp_path / "final" / "config.json").is_file() and (tmp_path / "metrics.jsonl").is_file()


def test_cli_unknown_key_exits_2_with_a_suggestion(tmp_path):
    proc = train(RECIPE, "train.max_step=3")
    assert proc.returncode == 2
    assert "unknown config key 'train.max_step'; did you mean 'train.max_steps'?" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_missing_recipe_exits_2(tmp_path):
    proc = train(str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "nope.yaml does not exist" in proc.stderr
