"""The quickstart's one config: the task, pretraining, evaluation, and the RL recipe (an `ExperimentConfig`).

Loaded like every endo_rl config (`config_loader`: YAML + `a.b=value` overrides, errors naming the key), so
`recipes/quickstart.yaml` holds exactly these defaults and `rl.train.lr=1e-3` on the command line overrides
the trainer's learning rate. The driver fills `rl.model.path`, `rl.data.train`, `rl.output_dir` and `rl.seed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from endo_rl.core import config_loader
from endo_rl.core.config import (
    MOVED_KEYS,
    AlgoConfig,
    DataConfig,
    EndogenousRewardConfig,
    EvalConfig,
    ExperimentConfig,
    GenerationConfig,
    LoggingConfig,
    ModelConfig,
    RewardConfig,
    TrainConfig,
    check_batch_sizes,
)
from endo_rl.quickstart.evaluate import HorizonEvalSettings
from endo_rl.quickstart.pretrain import PretrainConfig


@dataclass
class TaskConfig:
    train_horizons: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    """Horizons H (addition steps) of the demonstrations and of the RL prompts."""
    eval_horizons: list[int] = field(default_factory=lambda: [2, 3, 4, 5, 6])
    """Horizons of the held-out sets; inside the training range (compounding error, not length generalization)."""
    max_operand: int = 9
    """Operands are drawn uniformly from [0, max_operand]."""
    n_demonstrations: int = 100_000
    """Expert traces for pretraining (horizons uniform over train_horizons)."""
    n_rl_prompts: int = 5_000
    """RL prompts (no traces: RL sees only the question)."""
    n_eval: int = 200
    """Problems per held-out set; test and validation sets each have this many per horizon."""


@dataclass
class QuickstartEvalConfig(HorizonEvalSettings):
    split: Literal["test", "validation"] = "test"
    """Sets scored before/after: `test` for results; `validation` only for choosing settings."""
    curve_problems: int = 50
    """Problems per horizon for the learning curves (greedy + `samples` samples each), scored at step 0,
    every `rl.eval.every` RL steps and at the last step (`rl.eval.every=0`: no curves)."""


def default_rl() -> ExperimentConfig:
    """The quickstart's RL settings (the driver fills model path, data file, output dir and seed)."""
    return ExperimentConfig(
        model=ModelConfig(dtype="float32"),
        reward=RewardConfig(endogenous=EndogenousRewardConfig(weight=1.0, level="sequence", alpha=1.0)),
        data=DataConfig(prompt_field="prompt", answer_field="answer", template="plain", max_prompt_length=32),
        generation=GenerationConfig(max_new_tokens=64, temperature=1.0, batch_size=128),
        algo=AlgoConfig(name="grpo", kl_coef=0.01, group_size=8),
        train=TrainConfig(max_steps=240, prompts_per_step=16, micro_batch_size=64, lr=5e-5),
        eval=EvalConfig(every=20),
        logging=LoggingConfig(wandb=True, project="endo_rl-quickstart"),
    )


@dataclass
class QuickstartConfig:
    output_dir: str = "outputs/quickstart"
    """Where base/, rl/, data/, report.json and the plots go."""
    seed: int = 0
    """Seeds the problem sets, pretraining, RL and sampling."""
    threads: int = 1
    """torch CPU threads. 2 is ~1.5x faster on an idle 2-core machine, but when other processes share the
    cores, OpenMP threads wait on each other and a step can take 20x longer; 1 degrades gracefully."""
    task: TaskConfig = field(default_factory=TaskConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    eval: QuickstartEvalConfig = field(default_factory=QuickstartEvalConfig)
    rl: ExperimentConfig = field(default_factory=default_rl)


def load(path: str | Path | None = None, overrides: list[str] = ()) -> QuickstartConfig:
    """A quickstart recipe (optional) plus `key.sub=value` overrides -> a validated QuickstartConfig.

    Both are laid over the quickstart defaults (`default_rl()` included), not over the bare `ExperimentConfig`
    defaults, so a recipe need only name what it changes. Unknown keys are errors naming the key.
    """
    moved = {f"rl.{old}": f"rl.{new}" for old, new in MOVED_KEYS.items()} | {
        "eval.curve_every": "rl.eval.every"
    }
    cfg = config_loader.load(QuickstartConfig, path, overrides, moved, defaults=QuickstartConfig())
    check_batch_sizes(cfg.rl, 1)
    return cfg
