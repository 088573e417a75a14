"""NaN/Inf guard: where the bad number appeared and at which step, the last good checkpoint left intact, and
train.on_nonfinite=skip counting instead of stopping.

Already in tests/test_train.py: NaN rewards stop step 1 (test_nonfinite_rewards_stop_the_step_with_a_message)
and skip mode with NaN rewards keeps the weights (test_nonfinite_skip_counts_and_keeps_weights). The CLI's
one-line message for a NaN loss is a row of tests/test_reliability_inputs.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from endo_rl.core import config
from endo_rl.rl import checkpoint
from endo_rl.rl.run_log import read_metrics
from endo_rl.rl.trainer import NonFiniteError, Trainer

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "debug" / "tiny_cpu.yaml"
PROMPTS = REPO / "recipes" / "debug" / "arithmetic.jsonl"


def tiny_cfg(model_dir: Path, out: Path, *overrides: str) -> config.ExperimentConfig:
    fixed = [f"model.path={model_dir}", f"output_dir={out}", f"data.train={PROMPTS}", "logging.wandb=false"]
    return config.load(RECIPE, [*fixed, "train.max_steps=3", *overrides], world_size=1)


def poison_gradients_at_step(trainer: Trainer, step: int, value: float) -> None:
    """Multiply the LM head's gradient by `value` (NaN or Inf) in the backward pass of step `step` only;
    rewards, advantages and the loss stay finite, so only the gradient check can catch it."""
    lm_head = trainer.accelerator.unwrap_model(trainer.model).lm.lm_head.weight
    lm_head.register_hook(lambda g: g * value if trainer.step + 1 == step else g)


def digest(directory: Path, names: tuple[str, ...]) -> dict[str, str]:
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in names}


@pytest.mark.parametrize(
    "value", [float("nan"), pytest.param(float("inf"), marks=pytest.mark.slow)], ids=["nan", "inf"]
)
def test_nonfinite_gradients_stop_at_their_step_and_keep_the_last_checkpoint(tiny_model_dir, tmp_path, value):
    out = tmp_path / "run"
    trainer = Trainer(tiny_cfg(tiny_model_dir, out))
    poison_gradients_at_step(trainer, 2, value)
    step1 = checkpoint.checkpoints_dir(out) / "step-1"
    with pytest.raises(NonFiniteError) as err:
        trainer.fit()
    assert str(err.value) == (
        "non-finite values (NaN/Inf) in gradients at step 2; set train.on_nonfinite=skip to skip such steps"
    )
    assert checkpoint.complete_checkpoints(out) == [step1]  # nothing half-written for step 2
    assert not any(p.name.startswith(".tmp") for p in step1.parent.iterdir())
    # the last good checkpoint is intact: the same bytes as a straight 1-step run's, and it resumes
    good = tmp_path / "one_step"
    Trainer(tiny_cfg(tiny_model_dir, good, "train.max_steps=1")).fit()
    # (random_states_0.pkl also holds Python's global RNG, which other code in this process moves)
    files = ("model.safetensors", "optimizer.bin", "scheduler.bin")
    assert digest(step1, files) == digest(checkpoint.checkpoints_dir(good) / "step-1", files)
    state, good_state = (
        json.loads((d / "step-1" / checkpoint.STATE_FILE).read_text())
        for d in (step1.parent, checkpoint.checkpoints_dir(good))
    )
    assert state.pop("config")["output_dir"] == str(out)  # the configs differ in output_dir and max_steps
    good_state.pop("config")
    assert state == good_state
    assert load_file(str(step1 / "model.safetensors")).keys()
    resumed = Trainer(tiny_cfg(tiny_model_dir, out, "resume=true"))
    assert resumed.step == 1


def test_nonfinite_loss_is_named_as_the_loss(tiny_model_dir, tmp_path):
    trainer = Trainer(tiny_cfg(tiny_model_dir, tmp_path, "algo.ppo.vf_coef=.nan"))
    with pytest.raises(NonFiniteError, match=r"^non-finite values \(NaN/Inf\) in loss at step 1;"):
        trainer.fit()
    assert checkpoint.complete_checkpoints(tmp_path) == []


def test_infinite_rewards_are_named_with_the_advantages_they_poison(tiny_model_dir, tmp_path):
    trainer = Trainer(tiny_cfg(tiny_model_dir, tmp_path, "reward.length_penalty.weight=.inf"))
    with pytest.raises(
        NonFiniteError, match=r"^non-finite values \(NaN/Inf\) in rewards, advantages at step 1;"
    ):
        trainer.fit()


def test_skip_mode_counts_a_bad_gradient_step_and_leaves_the_weights_of_that_step(tiny_model_dir, tmp_path):
    """Step 2's gradients are Inf: it is skipped (weights after step 2 == after step 1), counted, and the run
    goes on to step 3."""
    out = tmp_path / "run"
    trainer = Trainer(tiny_cfg(tiny_model_dir, out, "train.on_nonfinite=skip", "train.keep_last=3"))
    poison_gradients_at_step(trainer, 2, float("inf"))
    trainer.fit()
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["skipped_steps"] for r in rows] == [0, 1, 1]
    steps = checkpoint.checkpoints_dir(out)
    w1, w2, w3 = (load_file(str(steps / f"step-{i}" / "model.safetensors")) for i in (1, 2, 3))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert not all(torch.equal(w2[k], w3[k]) for k in w2)
    assert all(torch.isfinite(v).all() for v in w3.values())


def test_nonfinite_parameters_names_each_bad_tensor_in_order_up_to_the_limit():
    from endo_rl.rl.nonfinite import nonfinite_parameters

    model = torch.nn.Sequential(*(torch.nn.Linear(3, 3) for _ in range(5))).to(torch.bfloat16)
    model.register_parameter("empty", torch.nn.Parameter(torch.empty(0)))  # skipped, not an error
    with torch.no_grad():
        model[0].weight.fill_(3e38)  # huge but finite: not reported
        model[1].bias[2] = float("nan")
        model[3].weight[0, 1] = float("-inf")
        model[4].weight[2, 2] = float("inf")
    assert nonfinite_parameters(model) == ["1.bias", "3.weight", "4.weight"]
    assert nonfinite_parameters(model, limit=1) == ["1.bias"]
    with torch.no_grad():
        for i in (1, 3, 4):
            model[i].reset_parameters()
    assert nonfinite_parameters(model) == []
