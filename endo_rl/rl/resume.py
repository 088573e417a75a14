"""Resuming with a config that differs from the checkpoint's: apply the safe changes knowingly, refuse the rest.

A checkpoint records the config it was trained with (trainer_state.json; older ones: OUTPUT_DIR/config.yaml).
On resume every differing key is either

- applied and printed: keys that change how the rest of the run proceeds but not what the checkpoint means
  (learning rates, weight decay, warm-up, clipping, step counts, checkpointing, logging, evaluation, generation
  batching/back-end/decode attention, micro-batching, `deterministic`: the kernels' reproducibility, not the
  algorithm). A new learning rate is written into the restored optimizer, which would otherwise bring back the
  old one;
- or refused, naming each key with its old and new value: everything else (model, LoRA, reward, data, algorithm,
  sampling, seed, prompts per step), since continuing would silently mix two different runs (a new model.path
  swaps only the frozen reference; ppo -> grpo has no value head to restore).

The resolved config.yaml written after resume is the config the run continues with, so it tells the truth.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from endo_rl.core.errors import UserError

APPLIED_PREFIXES = (
    "resume",
    "output_dir",
    "deterministic",
    "logging.",
    "eval.",
    "train.max_steps",
    "train.lr",
    "train.value_head_lr",
    "train.weight_decay",
    "train.warmup_steps",
    "train.max_grad_norm",
    "train.save_every",
    "train.keep_last",
    "train.on_nonfinite",
    "train.micro_batch_size",
    "train.logprob_micro_batch_size",
    "train.pack_sequences",
    "generation.batch_size",
    "generation.backend",
    "generation.decode_attention",
    "generation.compact_min_rows",
    "model.gradient_checkpointing",
    "model.compile_layers",
)


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def saved_config(state: dict, output_dir: Path) -> dict | None:
    """The config a checkpoint was trained with (None when neither record exists)."""
    if "config" in state:
        return state["config"]
    path = output_dir / "config.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def changes(saved: dict, now: dict) -> dict[str, tuple]:
    """key -> (checkpoint's value, current value) for every key that differs."""
    old, new = flatten(saved), flatten(now)
    return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}


def _applied(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in APPLIED_PREFIXES)


def check(diff: dict[str, tuple], checkpoint_path: Path) -> list[str]:
    """Raise UserError naming the refused keys; return 'key: old -> new' lines for the applied ones."""
    refused = {k: v for k, v in diff.items() if not _applied(k)}
    if refused:
        listed = ", ".join(
            f"{k} ({old!r} in the checkpoint, now {new!r})" for k, (old, new) in refused.items()
        )
        raise UserError(
            f"resume=true: {checkpoint_path} was trained with a different {listed}; these change what the run "
            "means: restore them, or start a new run in another output_dir"
        )
    return [f"{k}: {old!r} -> {new!r}" for k, (old, new) in diff.items() if k not in ("resume",)]
