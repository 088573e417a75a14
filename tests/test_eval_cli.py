"""`endo-rl eval` and `endo-rl compare` as a user runs them, plus resume of a killed eval."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import BENCHMARKS

from endo_rl.core.errors import UserError
from endo_rl.evaluation.evaluator import EvalSettings, evaluate


def endo_rl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "endo_rl.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )


PER_BENCHMARK_KEYS = {
    "accuracy", "stderr", "n", "size", "k", "n_completions", "n_correct", "n_truncated", "n_no_answer",
    "n_timeout", "n_parse_error", "tokens_generated", "wall_time_s",
}  # fmt: skip


def test_eval_end_to_end_with_a_tiny_model_and_limit(tiny_model_dir, tmp_path):
    out = tmp_path / "report.json"
    r = endo_rl("eval", "--model", tiny_model_dir, "--benchmarks", "aime24,gsm8k", "--data-dir", BENCHMARKS,
                "--limit", 2, "--max-new-tokens", 5, "--batch-size", 2, "--out", out, "--no-progress")  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert report["settings"]["template"] == "qwen25-math-cot" and report["settings"]["max_new_tokens"] == 5
    assert list(report["benchmarks"]) == ["aime24", "gsm8k"]
    for name, size in (("aime24", 30), ("gsm8k", 1319)):
        m = report["benchmarks"][name]
        assert set(m) >= PER_BENCHMARK_KEYS
        assert (m["n"], m["size"], m["k"], m["n_completions"]) == (2, size, 1, 2)
        assert 2 <= m["tokens_generated"] <= 10
        # a random model writes no \boxed{}: every answer is counted as missing, none silently scored
        assert m["n_no_answer"] + m["n_parse_error"] + m["n_timeout"] + m["n_correct"] <= 2
    assert [(x["benchmark"], x["index"]) for x in report["results"]] == [
        ("aime24", 0), ("aime24", 1), ("gsm8k", 0), ("gsm8k", 1)
    ]  # fmt: skip
    assert set(report["average"]) >= {"accuracy", "stderr"}
    lines = out.with_suffix(".predictions.jsonl").read_text().splitlines()
    assert "settings" in json.loads(lines[0]) and len(lines) == 5
    assert "aime24" in r.stdout and "average" in r.stdout


def _comparable(report: dict) -> dict:
    drop = {"wall_time_s", "predictions_file", "resumed_completions"}
    out = {k: v for k, v in report.items() if k not in drop}
    out["benchmarks"] = {
        n: {k: v for k, v in m.items() if k != "wall_time_s"} for n, m in report["benchmarks"].items()
    }
    return out


def test_killed_eval_resumes_and_gives_the_same_report(tiny_model_dir, tmp_path):
    from endo_rl.core.models import load_causal_lm, load_tokenizer

    model, tok = load_causal_lm(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    settings = EvalSettings(benchmarks=["aime24", "amc23"], data_dir=str(BENCHMARKS), limit=3, max_new_tokens=6,
                            batch_size=1, progress=False)  # fmt: skip
    full = evaluate(model, tok, settings, tmp_path / "full")
    assert full["resumed_completions"] == 0
    # a run killed after two completions, in the middle of writing the third
    lines = (tmp_path / "full" / "predictions.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "predictions.jsonl").write_text("".join(lines[:3]) + lines[3][:20])
    resumed = evaluate(model, tok, settings, tmp_path / "killed")
    assert resumed["resumed_completions"] == 2
    assert _comparable(resumed) == _comparable(full)
    assert (tmp_path / "killed" / "predictions.jsonl").read_text() == "".join(lines)
    with pytest.raises(UserError, match="max_new_tokens: file has 6, this run 7"):
        evaluate(model, tok, EvalSettings(**{**settings.__dict__, "max_new_tokens": 7}), tmp_path / "full")


def test_predictions_regrading_gives_the_known_accuracy(tmp_path):
    rows = [
        {"benchmark": "amc23", "index": 0, "completion": "Meeting after 1.5 h, so $\\boxed{27}$ miles."},
        {"benchmark": "gsm8k", "index": 0, "completion": "16 - 3 - 4 = 9 eggs, 9 * 2 = \\boxed{\\$18}"},
        {"benchmark": "amc23", "index": 1, "completion": "\\boxed{35}"},
        {"benchmark": "gsm8k", "index": 2, "completion": "I think it is 70000."},
        {"benchmark": "amc23", "index": 2, "completion": "\\boxed{45.0}"},
    ]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "regraded.json"
    r = endo_rl("eval", "--predictions", preds, "--data-dir", BENCHMARKS, "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    report = json.loads(out.read_text())
    assert [(x["benchmark"], x["index"], x["correct"]) for x in report["results"]] == [
        ("amc23", 0, True), ("gsm8k", 0, True), ("amc23", 1, False), ("gsm8k", 2, False), ("amc23", 2, True)
    ]  # fmt: skip
    amc, gsm = report["benchmarks"]["amc23"], report["benchmarks"]["gsm8k"]
    assert (amc["accuracy"], amc["n"], amc["size"]) == (pytest.approx(2 / 3), 3, 40)
    assert (gsm["accuracy"], gsm["n"], gsm["size"], gsm["n_no_answer"]) == (0.5, 2, 1319, 1)
    assert report["average"]["accuracy"] == pytest.approx((2 / 3 + 0.5) / 2)

    # compare the regraded report with a worse "before" report
    before = json.loads(out.read_text())
    before["benchmarks"]["amc23"]["accuracy"] = 0.25
    (tmp_path / "before.json").write_text(json.dumps(before))
    png = tmp_path / "cmp.png"
    r = endo_rl("compare", tmp_path / "before.json", out, "--png", png)
    assert r.returncode == 0, r.stderr
    amc_line = next(line for line in r.stdout.splitlines() if line.startswith("amc23"))
    assert "25.0" in amc_line and "66.7" in amc_line and "+41.7" in amc_line
    assert "gsm8k" in r.stdout and "average" in r.stdout
    assert "answer extraction: before boxed, after boxed" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the same completions with the harness's extraction: "I think it is 70000." now has an answer
    harness = tmp_path / "harness.json"
    r = endo_rl(
        "eval", "--predictions", preds, "--data-dir", BENCHMARKS, "--out", harness, "--extract", "harness"
    )
    assert r.returncode == 0, r.stderr
    assert "answer extraction: harness" in r.stdout
    report = json.loads(harness.read_text())
    assert report["settings"]["extract"] == "harness"
    assert report["benchmarks"]["gsm8k"]["n_no_answer"] == 0
    r = endo_rl("compare", out, harness, "--png", png)
    assert "answer extraction: before boxed, after harness" in r.stdout
    assert "warning: extract differs" in r.stdout


def test_user_errors_name_the_bad_input(tmp_path):
    r = endo_rl("eval", "--model", tmp_path, "--benchmarks", "math500,aime25", "--out", tmp_path / "r.json")
    assert r.returncode == 2
    assert "unknown benchmark 'aime25'" in r.stderr and "olympiadbench" in r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"benchmark": "aime24", "index": 0, "completion": "x"}\n{"benchmark": "aime24", "index": 1,\n'
    )
    r = endo_rl("eval", "--predictions", bad, "--data-dir", BENCHMARKS, "--out", tmp_path / "r.json")
    assert r.returncode == 2
    assert f"{bad}, line 2: not valid JSON" in r.stderr and "Traceback" not in r.stderr
