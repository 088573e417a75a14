"""The checks of an `ExperimentConfig` after loading: each value in its range (`VALUE_RULES`) and the batch-size
arithmetic across processes. `config.load` runs both; the messages name the config key. (`cfg` is an
`ExperimentConfig`; not imported here, as config.py imports this module.)"""

from __future__ import annotations

import math

from endo_rl.core.errors import UserError


def check_batch_sizes(cfg, world_size: int) -> None:
    """Every rank gets whole prompt groups and whole mini- and micro-batches; the message shows the numbers."""
    t, group = cfg.train, cfg.algo.group_size
    if t.prompts_per_step % world_size:
        raise UserError(
            f"train.prompts_per_step={t.prompts_per_step} is not divisible by the world size {world_size} "
            "(each process samples whole groups of responses for its own prompts)"
        )
    sequences = t.prompts_per_step * group
    if sequences % (world_size * t.micro_batch_size):
        raise UserError(
            f"train.prompts_per_step x algo.group_size = {t.prompts_per_step} x {group} = {sequences} sequences "
            f"per step is not divisible by world size x train.micro_batch_size = {world_size} x "
            f"{t.micro_batch_size} = {world_size * t.micro_batch_size}"
        )
    if (mini := t.mini_batch_size) is not None and (
        sequences % mini or mini % (world_size * t.micro_batch_size)
    ):
        raise UserError(
            f"train.mini_batch_size={mini} must divide the {sequences} sequences per step (prompts_per_step x "
            f"group_size) and be a multiple of world size x train.micro_batch_size = {world_size} x {t.micro_batch_size}"
        )


def _finite(lo: float, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False):
    def ok(x: float) -> bool:
        return math.isfinite(x) and (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)

    return ok


# key -> (what is expected, test); None (optional keys) is not checked. These run after __post_init__, for values
# that would crash later or train on nonsense; NaN/Inf reward weights and vf_coef stop step 1 (non-finite guard).
VALUE_RULES = {
    "reward.endogenous.alpha": ("a finite number > 0", _finite(0, lo_open=True)),
    "lora.r": ("an integer >= 1", _finite(1)),
    "lora.alpha": ("an integer >= 1", _finite(1)),
    "lora.dropout": ("a number in [0, 1)", _finite(0, 1, hi_open=True)),
    "data.max_prompt_length": ("an integer >= 1", _finite(1)),
    "generation.max_new_tokens": ("an integer >= 1", _finite(1)),
    "generation.temperature": ("a finite number >= 0 (0: greedy)", _finite(0)),
    "generation.top_p": ("a number in (0, 1]", _finite(0, 1, lo_open=True)),
    "generation.top_k": ("an integer >= 0 (0: off)", _finite(0)),
    "generation.batch_size": ("an integer >= 1", _finite(1)),
    "generation.compact_min_rows": ("an integer >= 0 (0: never compact)", _finite(0)),
    "algo.kl_coef": ("a finite number >= 0", _finite(0)),
    "algo.ppo.gamma": ("a number in [0, 1]", _finite(0, 1)),
    "algo.ppo.lam": ("a number in [0, 1]", _finite(0, 1)),
    "algo.clip_eps": ("a finite number > 0", _finite(0, lo_open=True)),
    "algo.ppo.value_clip": ("a finite number > 0", _finite(0, lo_open=True)),
    "train.lr": ("a number in (0, 1]", _finite(0, 1, lo_open=True)),
    "train.value_head_lr": ("a number in (0, 1]", _finite(0, 1, lo_open=True)),
    "train.weight_decay": ("a finite number >= 0", _finite(0)),
    "train.warmup_steps": ("an integer >= 0", _finite(0)),
    "train.max_grad_norm": ("a finite number > 0", _finite(0, lo_open=True)),
    "eval.limit": ("an integer >= 1", _finite(1)),
    "eval.max_new_tokens": ("an integer >= 1", _finite(1)),
    "eval.temperature": ("a finite number >= 0 (0: greedy)", _finite(0)),
    "eval.n_samples": ("an integer >= 1", _finite(1)),
    "logging.log_every": ("an integer >= 1", _finite(1)),
}


def check_values(cfg) -> None:
    """Each VALUE_RULES key in range, and settings that cannot learn anything refused; messages name the key."""
    for key, (expected, ok) in VALUE_RULES.items():
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value is not None and not ok(value):
            raise UserError(f"config key '{key}' must be {expected}, got {value}")
    if cfg.algo.name == "grpo" and cfg.generation.temperature == 0:
        raise UserError(
            "algo.name=grpo with generation.temperature=0 samples the same response for every member of a "
            "group, so every advantage is 0 and nothing is learned; set generation.temperature > 0"
        )
