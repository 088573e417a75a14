"""A SIGKILLed `endo-rl eval` resumes from its saved completions and writes the same report.

tests/test_eval_cli.py::test_killed_eval_resumes_and_gives_the_same_report simulates the kill in process (a
torn last line); here a real subprocess gets a real SIGKILL while it generates or grades.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BENCHMARKS

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def start_eval(model_dir: Path, out: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "endo_rl.cli", "eval", "--model", str(model_dir), "--benchmarks", "aime24,amc23",
            "--data-dir", str(BENCHMARKS), "--limit", "4", "--max-new-tokens", "6", "--batch-size", "1",
            "--device", "cpu", "--out", str(out), "--no-progress"]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, cwd=REPO)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]


def saved_lines(out: Path) -> int:
    path = out.with_suffix(".predictions.jsonl")
    return path.read_bytes().count(b"\n") if path.exists() else 0


def kill_when(proc: subprocess.Popen, reached: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 300
    while not reached():
        assert proc.poll() is None, "the eval finished before the kill point"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()


def comparable(out: Path) -> dict:
    report = json.loads(out.read_text())
    drop = {"wall_time_s", "predictions_file", "resumed_completions"}
    kept = {k: v for k, v in report.items() if k not in drop}
    kept["benchmarks"] = {
        n: {k: v for k, v in m.items() if k != "wall_time_s"} for n, m in report["benchmarks"].items()
    }
    return kept


def kill_and_resume(model_dir: Path, tmp_path: Path, reached: Callable[[Path], bool]) -> None:
    straight_out, killed_out = tmp_path / "straight" / "r.json", tmp_path / "killed" / "r.json"
    straight = start_eval(model_dir, straight_out)  # the uninterrupted run, alongside
    killed = start_eval(model_dir, killed_out)
    kill_when(killed, lambda: reached(killed_out))
    finish(start_eval(model_dir, killed_out))
    finish(straight)
    assert comparable(killed_out) == comparable(straight_out)
    resumed = json.loads(killed_out.read_text())["resumed_completions"]
    assert resumed >= 1
    # the predictions file holds each completion once, in the same order as the uninterrupted run's
    killed_rows = killed_out.with_suffix(".predictions.jsonl").read_text().splitlines()
    straight_rows = straight_out.with_suffix(".predictions.jsonl").read_text().splitlines()
    assert killed_rows == straight_rows


def test_eval_sigkilled_while_generating_resumes_to_the_same_report(tiny_model_dir, tmp_path):
    kill_and_resume(tiny_model_dir, tmp_path, lambda out: saved_lines(out) >= 3)  # settings + 2 completions


@pytest.mark.slow
@pytest.mark.parametrize("lines", [2, 6, 9], ids=["after 1", "in the second benchmark", "all generated"])
def test_eval_sigkilled_at_other_points_resumes_to_the_same_report(tiny_model_dir, tmp_path, lines):
    kill_and_resume(tiny_model_dir, tmp_path, lambda out: saved_lines(out) >= lines)
