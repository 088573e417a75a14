"""Regression: real model completions with checked verdicts are graded as before.

tests/data/real_completions_math.jsonl holds completions of a Qwen2.5-Math model on MATH test problems from
the Qwen2.5-Math evaluation harness's example outputs (QwenLM/Qwen2.5-Math @ a45202bd,
evaluation/data/eval_rm_maj_example/math_cot_100.jsonl, MIT licence; source and row kept on each line). The
verdict is the harness's and endo_rl's where the two independent graders agree, a hand verdict where they do
not (`verdict_basis`). Written by `bench/grader_fidelity.py --regression-out`; see BENCHMARKS.md, "Grader
fidelity on real completions", for the five-benchmark check these come from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import BENCHMARKS

from endo_rl.evaluation.benchmarks import load_benchmark
from endo_rl.evaluation.grading import Grader

DATA = Path(__file__).parent / "data" / "real_completions_math.jsonl"


def _rows() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]


def test_the_regression_set_is_small_licensed_and_varied():
    rows = _rows()
    assert DATA.stat().st_size < 2_000_000
    assert len(rows) >= 200
    assert {r["license"] for r in rows} == {"MIT (evaluation/LICENSE)"}
    assert 0.2 < sum(r["correct"] for r in rows) / len(rows) < 0.9  # right and wrong answers both present


@pytest.mark.slow
def test_real_completions_keep_their_verdicts():
    gold = {p.index: p.gold for p in load_benchmark("math", BENCHMARKS)}
    mismatches = []
    with Grader(timeout_s=10.0) as grader:
        for r in _rows():
            grade = grader.grade(gold[r["index"]], r["completion"])
            if grade.correct != r["correct"]:
                mismatches.append(f"{r['source']}#{r['row']}: expected {r['correct']}, got {grade}")
    assert not mismatches, "\n".join(mismatches)


def test_a_sample_of_real_completions_keeps_its_verdicts():
    gold = {p.index: p.gold for p in load_benchmark("math", BENCHMARKS)}
    rows = _rows()[::6]
    with Grader(timeout_s=10.0) as grader:
        got = [grader.grade(gold[r["index"]], r["completion"]).correct for r in rows]
    assert got == [r["correct"] for r in rows]
