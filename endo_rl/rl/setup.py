"""Building what the trainer trains and scores with: policy (+ value head), reference, reward model, optimizer.

Reference choice: with LoRA the reference is the base model itself, run with the adapter disabled (no second
copy); without LoRA it is a frozen copy of the initial policy. `reward.endogenous.model` adds a separate
frozen reward model (the KL reference stays the initial policy). `model.compile_layers` compiles the decoder
layers of all three in place, after LoRA and gradient checkpointing are applied.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from accelerate import Accelerator

from endo_rl.core import models
from endo_rl.core.config import ExperimentConfig
from endo_rl.core.errors import UserError
from endo_rl.rl import distributed
from endo_rl.rl.policy import PolicyModel
from endo_rl.rl.rewards import RewardWeights


@dataclass
class Models:
    policy: PolicyModel
    reference_lm: torch.nn.Module | None
    """None: the policy's own base model with the LoRA adapter disabled."""
    reward_lm: torch.nn.Module | None
    """None: the endogenous reward comes from the reference."""
    base_copy: torch.nn.Module | None
    """An injected model's base weights, kept only to merge a LoRA adapter at export."""


def frozen(lm: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    return lm.to(device).eval().requires_grad_(False)


def build_models(
    cfg: ExperimentConfig,
    tokenizer,
    accelerator: Accelerator,
    lm: torch.nn.Module | None = None,
    critic: bool = False,
) -> Models:
    """The policy on CPU (accelerate places it) with a value head when `critic`; reference and reward models
    frozen on the accelerator's device."""
    check_compile_layers(cfg, distributed.zero_stage(accelerator))
    device = accelerator.device
    if lm is None:
        lm = models.load_causal_lm(cfg.model.path, cfg.model.gguf_file, cfg.model.dtype, "cpu")
    models.check_vocab(lm, tokenizer, "policy")
    base_copy = copy.deepcopy(lm) if cfg.lora.enabled and not cfg.model.path else None
    reference_lm = None if cfg.lora.enabled else frozen(copy.deepcopy(lm), device)
    reward_lm = None
    if cfg.reward.endogenous.model is not None:
        reward_lm = frozen(
            models.load_causal_lm(cfg.reward.endogenous.model, None, cfg.model.dtype, "cpu"), device
        )
        models.check_vocab(reward_lm, tokenizer, "reward model")
    if cfg.lora.enabled:
        lm = distributed.apply_lora(lm, cfg.lora)
    if cfg.model.gradient_checkpointing:
        lm.gradient_checkpointing_enable()
        if cfg.lora.enabled:  # frozen embeddings: the checkpointed blocks need an input that requires grad
            lm.enable_input_require_grads()
    if cfg.model.compile_layers:  # after LoRA and checkpointing, so the compiled calls include them
        for model in (lm, reference_lm, reward_lm):
            if model is not None:
                models.compile_layers(model)
    policy = PolicyModel(lm, value_head=critic)
    return Models(policy, reference_lm, reward_lm, base_copy)


def check_compile_layers(cfg: ExperimentConfig, zero_stage: int) -> None:
    """`model.compile_layers` is refused under ZeRO-3: its hooks gather each layer's sharded parameters
    around the layer's call, which compiled layers would trace into their graphs."""
    if cfg.model.compile_layers and zero_stage == 3:
        raise UserError(
            "model.compile_layers=true is not supported with DeepSpeed ZeRO-3 (parameters are gathered by "
            "hooks around each layer): set model.compile_layers=false or use ZeRO-2 / DDP"
        )


def reward_weights(cfg: ExperimentConfig) -> RewardWeights:
    """The scalars of `rewards.compose_rewards`, from `reward.*`, `generation.max_new_tokens` and `algo.kl_*`."""
    r = cfg.reward
    return RewardWeights(
        endogenous=r.endogenous.weight,
        level=r.endogenous.level,
        correctness=r.correctness.weight,
        length_penalty=r.length_penalty.weight,
        max_new_tokens=cfg.generation.max_new_tokens,
        kl_coef=cfg.algo.kl_in_reward,
    )


def make_optimizer(
    cfg: ExperimentConfig, policy: PolicyModel
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the trainable parameters (the value head may have its own lr); linear warm-up, then flat."""
    t = cfg.train
    groups = [{"params": [p for p in policy.lm.parameters() if p.requires_grad], "lr": t.lr}]
    if policy.value_head is not None:
        lr = t.lr if t.value_head_lr is None else t.value_head_lr
        groups.append({"params": list(policy.value_head.parameters()), "lr": lr})
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    optimizer = torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay, fused=on_cuda or None)
    warmup = t.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup + 1)))
    return optimizer, scheduler


def load_base(cfg: ExperimentConfig, base_copy: torch.nn.Module | None) -> torch.nn.Module:
    """A fresh base model on CPU, to merge a LoRA adapter into."""
    if base_copy is not None:
        return base_copy
    return models.load_causal_lm(cfg.model.path, cfg.model.gguf_file, cfg.model.dtype, "cpu")


def set_optimizer_settings(optimizer, scheduler, cfg: ExperimentConfig) -> None:
    """Write the config's learning rates and weight decay into a restored optimizer (groups as in make_optimizer).

    Restoring a checkpoint brings back the saved values; a resume that changed them applies them here. The
    warm-up schedule is the current config's already (the LambdaLR lambda is not saved).
    """
    t = cfg.train
    base_lrs = [t.lr, t.lr if t.value_head_lr is None else t.value_head_lr][: len(optimizer.param_groups)]
    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate wraps the scheduler
    inner.base_lrs = base_lrs
    for group, base, factor in zip(optimizer.param_groups, base_lrs, inner.lr_lambdas):
        group["initial_lr"] = base
        group["lr"] = base * factor(inner.last_epoch)
        group["weight_decay"] = t.weight_decay
