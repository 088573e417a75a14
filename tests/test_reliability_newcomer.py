"""The newcomer's path from issue 15: a model to train without writing Python, messages that name the
difference, a number given for a text key, the score heat map, and a quiet stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BENCHMARKS, QWEN_TOKENIZER

from endo_rl.cli import main
from endo_rl.core import config
from endo_rl.core.errors import UserError

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "debug" / "tiny_cpu.yaml"


def test_tiny_model_command_then_train_with_the_debug_recipe(tmp_path, capsys):
    """What the debug recipe's header tells a newcomer to run, as they run it (the CLI's main)."""
    header = RECIPE.read_text().split("\noutput_dir")[0]
    assert "endo-rl tiny-model /tmp/tiny_qwen" in header and "tests/conftest.py" not in header
    model = tmp_path / "tiny_qwen"
    made = subprocess.run(
        [sys.executable, "-m", "endo_rl.cli", "tiny-model", str(model), "--tokenizer", str(QWEN_TOKENIZER)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    # stdout holds the one line: no DeepSpeed "Setting accelerator to CPU" notice (its import saves the model)
    assert made.stdout == f"wrote {model} (random Qwen2, hidden 32, 2 layers, tokenizer {QWEN_TOKENIZER})\n"
    out = tmp_path / "run"
    assert main(["train", str(RECIPE), f"model.path={model}", f"output_dir={out}", "train.max_steps=1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"final policy: {out / 'final'}"
    assert main(["tiny-model", str(model)]) == 2  # never overwrites
    assert "already exists and is not an empty directory" in capsys.readouterr().err


@pytest.mark.slow
def test_no_progress_silences_the_library_bars_too(tiny_model_dir, tmp_path):
    argv = [sys.executable, "-m", "endo_rl.cli", "eval", "--model", str(tiny_model_dir), "--benchmarks", "aime24",
            "--data-dir", str(BENCHMARKS), "--limit", "1", "--max-new-tokens", "2", "--out", str(tmp_path / "r.json")]  # fmt: skip
    loud = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300)
    quiet = subprocess.run([*argv, "--no-progress"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert loud.returncode == quiet.returncode == 0, quiet.stderr[-2000:]
    assert "Loading weights" in loud.stderr  # the bar this test is about exists without the flag
    assert "Loading weights" not in quiet.stderr and "it/s" not in quiet.stderr


def test_a_number_for_a_text_key_on_the_command_line_is_kept_as_written():
    cfg = config.load(RECIPE, ["output_dir=2024", "model.path=007"], world_size=1)
    assert (cfg.output_dir, cfg.model.path) == ("2024", "007")


def test_rm_eval_names_the_settings_that_differ(tmp_path):
    from endo_rl.rm_eval.run import read_results

    path = tmp_path / "rm.jsonl"
    saved = {"version": 1, "model": "a", "alpha": 1.0, "methods": ["endogenous"]}
    path.write_text(json.dumps({"settings": saved}) + "\n")
    with pytest.raises(
        UserError, match=r"was written with other settings \(alpha: file has 1.0, this run 2.0\)"
    ):
        read_results(path, {**saved, "alpha": 2.0})


def test_score_html_shows_the_prompt_and_plain_tooltips(tiny_model_dir, tmp_path, capsys):
    page = tmp_path / "s.html"
    argv = [
        "score",
        "--model",
        str(tiny_model_dir),
        "--prompt",
        "1 < 2?",
        "--response",
        "yes & no",
        "--html",
        str(page),
    ]
    assert main(argv) == 0
    assert f"wrote {page}" in capsys.readouterr().out
    text = page.read_text()
    assert "1 &lt; 2?" in text  # the prompt, escaped once
    assert "&amp;#10;" not in text and "&#10;" not in text  # tooltips break lines, no literal entities
    assert 'title="token 0: ' in text and "\nreward " in text


@pytest.fixture
def kept_figures(monkeypatch) -> list:
    """Figures the plotting code closes, kept for inspection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    return kept


def test_curves_have_integer_step_ticks(tmp_path, kept_figures):
    from endo_rl.rl.run_log import plot_curves

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2)))
    assert plot_curves(metrics, tmp_path / "curves.png") == tmp_path / "curves.png"
    ticks = kept_figures[0].axes[0].get_xticks()
    assert len(ticks) and all(float(t).is_integer() for t in ticks), ticks


def test_compare_chart_of_zero_accuracies_starts_at_zero(tmp_path, kept_figures):
    from endo_rl.evaluation.reports import bar_chart

    report = {"benchmarks": {"aime24": {"accuracy": 0.0, "stderr": 0.0, "n": 30}}}
    bar_chart(report, report, tmp_path / "c.png")
    bottom, top = kept_figures[0].axes[0].get_ylim()
    assert bottom == 0 and top >= 5
