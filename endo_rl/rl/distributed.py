"""The one module that touches accelerate, DeepSpeed and peft; the trainer never asks where it runs.

It runs as a plain single CPU/GPU process (`python -m endo_rl.cli train ...`) and unchanged under
`accelerate launch` with DDP or DeepSpeed ZeRO-2/3 (configs in launch/accelerate/). Gradient accumulation is
driven by accelerate (`accumulate` + `backward`), so DeepSpeed's own accumulation counter and ours agree;
DeepSpeed's micro-batch size, accumulation steps and gradient clipping are set here from the recipe, never
"auto" (there is no prepared dataloader for accelerate to infer them from).

ZeRO-3: generation and the no-grad scoring passes run inside TRL's `unwrap_model_for_generation`, which
gathers the full parameters once per rollout and releases them afterwards (PITFALLS: gather once, generate,
release). A separate frozen reference model is a plain replica on every GPU, not sharded.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from endo_rl.core.config import LoraConfig
from endo_rl.core.errors import UserError
from endo_rl.rl.determinism import make_deterministic


def make_accelerator(grad_accum_steps: int, micro_batch_size: int, max_grad_norm: float) -> Accelerator:
    """An Accelerator for this process (plain or launched); DeepSpeed batch settings fixed from the recipe.

    Launched processes without a GPU (torchrun / `accelerate launch --multi_gpu` on a CPU machine) are joined
    over gloo: accelerate would otherwise make each of them a separate single-process run on one output_dir.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator(
        gradient_accumulation_steps=grad_accum_steps, cpu=world > 1 and not torch.cuda.is_available()
    )
    if accelerator.num_processes != world:
        raise UserError(
            f"the launcher started {world} processes (WORLD_SIZE={world}) but accelerate joined "
            f"{accelerator.num_processes}: check the launch command (see `endo-rl train --help`)"
        )
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        plugin.deepspeed_config.update(
            train_micro_batch_size_per_gpu=micro_batch_size,
            gradient_accumulation_steps=grad_accum_steps,
            gradient_clipping=max_grad_norm,
            train_batch_size=micro_batch_size * grad_accum_steps * accelerator.num_processes,
        )
        if plugin.zero_stage == 3:  # the final export gathers a full state dict (accelerator.get_state_dict)
            zero = plugin.deepspeed_config.setdefault("zero_optimization", {})
            zero["stage3_gather_16bit_weights_on_model_save"] = True
    return accelerator


def is_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def zero_stage(accelerator: Accelerator) -> int:
    return accelerator.state.deepspeed_plugin.zero_stage if is_deepspeed(accelerator) else 0


def seed_everything(seed: int, rank: int, deterministic: bool = False) -> None:
    """Python, NumPy and torch (all devices) RNGs; each rank gets its own stream so rollouts differ.

    `deterministic` (the config key) also switches to deterministic kernels (endo_rl/rl/determinism.py). The
    trainer calls this before it loads a model, so before the first matmul creates a cuBLAS handle (which
    reads CUBLAS_WORKSPACE_CONFIG once); making the accelerator before it runs no matmul.
    """
    if deterministic:
        make_deterministic()
    s = seed + rank
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


@contextlib.contextmanager
def whole_weights_on_load(accelerator: Accelerator) -> Iterator[None]:
    """Load models whole on every rank, also under ZeRO-3.

    accelerate's DeepSpeed plugin registers its config with transformers, which makes `from_pretrained` shard
    weights at load time (zero.Init) whatever `zero3_init_flag` says; the trainer needs the whole initial
    policy to copy into the frozen reference before DeepSpeed shards the policy at `prepare`.
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        yield
        return
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(plugin.hf_ds_config)


def apply_lora(model: torch.nn.Module, cfg: LoraConfig) -> torch.nn.Module:
    """Wrap the model in a peft LoRA adapter; the base weights are frozen."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def adapter_disabled(lm: torch.nn.Module) -> contextlib.AbstractContextManager:
    """The base model's forward, from the same weights: the LoRA adapter switched off."""
    return lm.disable_adapter()


@contextlib.contextmanager
def gathered_for_generation(model: torch.nn.Module, accelerator: Accelerator) -> Iterator[torch.nn.Module]:
    """The unwrapped model with full parameters (gathered once under ZeRO-3), in eval mode."""
    from trl.models.utils import unwrap_model_for_generation

    with unwrap_model_for_generation(model, accelerator) as unwrapped:
        unwrapped.eval()
        try:
            yield unwrapped
        finally:
            unwrapped.train()


def sum_over_ranks(accelerator: Accelerator, x: torch.Tensor) -> torch.Tensor:
    """Elementwise sum over processes (identity for one process)."""
    if accelerator.num_processes == 1:
        return x
    return accelerator.reduce(x.to(accelerator.device), reduction="sum").to(x.device)


def synchronize(accelerator: Accelerator) -> None:
    """Wait for this process's device work (for honest phase timings); no-op on CPU."""
    if accelerator.device.type == "cuda":
        torch.cuda.synchronize(accelerator.device)


def any_rank(accelerator: Accelerator, flag: bool) -> bool:
    """True when `flag` is True on any process (so every process takes the same branch)."""
    return bool(sum_over_ranks(accelerator, torch.tensor([float(flag)])).item() > 0)


def all_errors(accelerator: Accelerator, error: str | None) -> list[str]:
    """Every rank's error message (None: no error), gathered to all ranks, each prefixed with its rank when
    several processes run (collective: call on every rank)."""
    if accelerator.num_processes == 1:
        return [error] if error else []
    from accelerate.utils import gather_object

    tagged = None if error is None else f"rank {accelerator.process_index}: {error}"
    return [e for e in gather_object([tagged]) if e]


def unwrap(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    return accelerator.unwrap_model(model)


def full_state_dict(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The complete state dict on the main process (gathers ZeRO-3 shards; collective: call on every rank)."""
    return accelerator.get_state_dict(model)


def trainable_names(model: torch.nn.Module) -> set[str] | None:
    """Names of the trainable tensors when some parameters are frozen (LoRA), else None (all of them)."""
    params = list(model.named_parameters())
    if all(p.requires_grad for _, p in params):
        return None
    return {name for name, p in params if p.requires_grad}


def _drop_frozen(models: list[torch.nn.Module], weights: list[dict], _output_dir: str) -> None:
    """accelerate save pre-hook: keep only trainable tensors (a LoRA checkpoint without the frozen base)."""
    for model, state in zip(models, weights, strict=True):
        keep = trainable_names(model)
        if keep is not None:
            for key in [k for k in state if k not in keep]:
                del state[key]


def save_state(accelerator: Accelerator, directory: Path) -> None:
    """Model, optimizer, scheduler and every rank's RNG states (collective; DeepSpeed writes its shards).

    With frozen parameters (LoRA) only the trainable tensors are written: the frozen base is `model.path`
    itself, so a 7B LoRA checkpoint is the adapter (+ value head), ~0.5 GB with its optimizer, not 15 GB.
    """
    if is_deepspeed(accelerator):
        accelerator.save_state(str(directory), safe_serialization=True)
        return
    handle = accelerator.register_save_state_pre_hook(_drop_frozen)
    try:
        accelerator.save_state(str(directory), safe_serialization=True)
    finally:
        handle.remove()


def _check_saved_keys(models: list[torch.nn.Module], input_dir: str) -> None:
    """accelerate load pre-hook: the file holds the model's trainable tensors (all of them, or only those of a
    LoRA adapter), nothing the model lacks. A tied weight saved once (safetensors keeps one name of a shared
    tensor, e.g. the LM head tied to the embeddings) counts as present."""
    from safetensors import safe_open

    for i, model in enumerate(models):
        path = Path(input_dir) / (f"model_{i}.safetensors" if i else "model.safetensors")
        if not path.is_file():
            continue
        with safe_open(str(path), framework="pt") as f:
            saved = set(f.keys())
        state = model.state_dict()
        expected = trainable_names(model) or set(state)
        saved_storage = {state[k].untyped_storage().data_ptr() for k in saved & set(state)}
        missing = sorted(
            k for k in expected - saved if state[k].untyped_storage().data_ptr() not in saved_storage
        )
        unknown = sorted(saved - set(state))
        if missing or unknown:
            raise UserError(
                f"checkpoint {path} does not match the model: it lacks {len(missing)} of the model's trainable "
                f"tensors {missing[:1]} and has {len(unknown)} the model lacks {unknown[:1]}; resume with the "
                "same model.path and lora.* settings"
            )


def load_state(accelerator: Accelerator, directory: Path) -> None:
    if is_deepspeed(accelerator):
        accelerator.load_state(str(directory))
        return
    handle = accelerator.register_load_state_pre_hook(_check_saved_keys)
    try:  # strict=False lets a trainable-only checkpoint load; _check_saved_keys keeps it strict
        accelerator.load_state(str(directory), strict=False)
    finally:
        handle.remove()


def merge_lora(
    base: torch.nn.Module, trained: torch.nn.Module, state: dict[str, torch.Tensor]
) -> torch.nn.Module:
    """A fresh base model with the trained adapter (from `state`, keys as in `trained`) merged in."""
    from peft import get_peft_model

    fresh = get_peft_model(base, trained.peft_config["default"])
    fresh.load_state_dict(state, strict=True)
    return fresh.merge_and_unload()
