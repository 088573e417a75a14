"""Every shipped recipe starts: it loads, and each training recipe runs one step on its own data source.

Each training recipe runs through the real trainer on a tiny random Qwen2 (the real Qwen2.5 tokenizer), from the
repository root, so its data paths (`../shared/benchmarks/...`, `recipes/debug/...`) resolve as they do from a
clean clone with ../shared beside it. Overridden: the model (`model.path`), the lengths (new tokens for rollouts
and evaluation), `train.max_steps=1`, `output_dir`, and `eval.limit=1` (a recipe that evaluates before and
after still does, on one problem per benchmark). Everything else, batch sizes and data included, is the recipe's.

The 7B recipes' steps (512 and 128 rollouts) take up to ~1.5 min on a 2-core CPU, so CI builds their whole
trainer (config, every prompt of MATH train tokenized and length-checked, models, optimizer) and the full step
is marked slow (both pass: `pytest -m slow tests/test_recipes_run.py`).
The quickstart recipes run through `endo-rl quickstart` (tests/test_quickstart.py); rm_eval recipes are
system-prompt files for `endo-rl rm-eval`, loaded here with its loader.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from endo_rl.core import config
from endo_rl.rl.run_log import read_metrics
from endo_rl.rl.trainer import run

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
TRAINING = sorted(
    p for p in RECIPES.rglob("*.yaml") if "rm_eval" not in p.parts and not p.name.startswith("quickstart")
)
# over ~30 s on a 2-core CPU (measured: GRPO 87 s for 512 rollouts, PPO 8-52 s for 128): marked slow
SLOW = {"qwen2.5-math-7b-grpo.yaml", "qwen2.5-math-7b-ppo.yaml"}


def one_step_overrides(model_dir: Path, out: Path) -> list[str]:
    return [
        f"model.path={model_dir}",
        f"output_dir={out}",
        "train.max_steps=1",
        "generation.max_new_tokens=3",
        "eval.max_new_tokens=3",
        "eval.limit=1",
    ]


def test_every_training_recipe_is_covered():
    names = {p.name for p in TRAINING}
    assert {
        "tiny_cpu.yaml",
        "tiny_gpu.yaml",
        "qwen2.5-math-7b-ppo.yaml",
        "qwen2.5-math-7b-grpo.yaml",
    } <= names
    assert "smollm2-135m-gsm8k-grpo.yaml" in names


@pytest.mark.parametrize("name", sorted(SLOW))
def test_slow_recipe_builds_its_trainer_on_its_own_data(name, tiny_model_dir, tmp_path, monkeypatch, capsys):
    from endo_rl.rl.trainer import Trainer

    monkeypatch.chdir(REPO)
    cfg = config.load(RECIPES / name, one_step_overrides(tiny_model_dir, tmp_path / "run"), world_size=1)
    trainer = Trainer(cfg)
    assert (
        len(trainer.prompts) > 7000
    )  # MATH train: 7,500 rows, the few over 1,024 tokens dropped and counted
    assert "data.train: dropped " in capsys.readouterr().err


@pytest.mark.parametrize(
    "recipe",
    [pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW else p for p in TRAINING],
    ids=lambda p: str(p.relative_to(RECIPES)),
)
def test_training_recipe_runs_one_step_on_its_own_data(recipe, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    # A random tiny model never samples a stop token, so under GRPO's default truncation=mask every response
    # would leave the loss and the step would make no update; the benchmark's stop-token hook makes responses
    # end as a real model's do (a test-only switch, the recipe itself is unchanged).
    monkeypatch.setenv("ENDO_RL_MODEL_PLUGIN", "bench.stop_hook:install")
    monkeypatch.setenv("ENDO_RL_STOP_P", "0.25")
    cfg = config.load(recipe, one_step_overrides(tiny_model_dir, tmp_path / "run"), world_size=1)
    final = run(cfg)
    assert (final / "config.json").is_file() or (final / "adapter_config.json").is_file()
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    step = [r for r in rows if r["step"] == 1 and "loss" in r]
    assert step and math.isfinite(step[0]["loss"]) and math.isfinite(step[0]["reward/total"])


def test_rm_eval_system_prompt_recipes_load():
    from endo_rl.rm_eval.run import load_system_prompts

    for path in sorted((RECIPES / "rm_eval").glob("*.yaml")):
        prompts = load_system_prompts(str(path))
        assert prompts and all(isinstance(v, str) and v.strip() for v in prompts.values()), path
