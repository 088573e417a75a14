"""Pretraining the quickstart's tiny Qwen2 from scratch by next-token prediction on the expert's traces.

This is imitation learning (behaviour cloning): the loss is the cross-entropy of the trace and its
end-of-sequence token given the prompt. The prompt's random digits are not predicted; they carry no skill.
The budget is a fixed number of optimizer steps from a seed, so the result does not depend on machine speed.

Shape legend: B batch, T sequence, V vocab.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from endo_rl.quickstart.task import AdditionProblem
from endo_rl.quickstart.tokenizer import encode


@dataclass
class PretrainConfig:
    layers: int = 2
    """Decoder layers."""
    hidden: int = 128
    """Hidden size (4 heads of 32, 2 KV heads)."""
    steps: int = 250
    """Optimizer steps."""
    batch_size: int = 64
    """Traces per step."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warm-up over 5% of steps, then cosine to 10%)."""


def tiny_qwen2(tokenizer, cfg: PretrainConfig, seed: int):
    """A freshly initialised Qwen2 sized for the quickstart's vocabulary."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden,
        intermediate_size=2 * cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    return Qwen2ForCausalLM(config)


def encode_demonstrations(
    tokenizer, problems: Sequence[AdditionProblem]
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, trace ids + eos) per problem."""
    eos = tokenizer.eos_token_id
    return [(encode(tokenizer, p.prompt), encode(tokenizer, p.trace) + [eos]) for p in problems]


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded input ids, attention mask and labels (-100 on prompt tokens and padding)."""
    T = max(len(p) + len(r) for p, r in pairs)
    input_ids_BT = torch.full((len(pairs), T), pad_id, dtype=torch.long)
    attention_BT = torch.zeros_like(input_ids_BT)
    labels_BT = torch.full_like(input_ids_BT, -100)
    for b, (p, r) in enumerate(pairs):
        n = len(p) + len(r)
        input_ids_BT[b, :n] = torch.tensor(p + r)
        attention_BT[b, :n] = 1
        labels_BT[b, len(p) : n] = torch.tensor(r)
    return input_ids_BT, attention_BT, labels_BT


def response_loss(model, input_ids_BT, attention_BT, labels_BT) -> torch.Tensor:
    """Mean next-token cross-entropy over response tokens (logits at t predict token t+1)."""
    logits_BTV = model(input_ids=input_ids_BT, attention_mask=attention_BT, use_cache=False).logits
    return F.cross_entropy(logits_BTV[:, :-1].flatten(0, 1), labels_BT[:, 1:].flatten(), ignore_index=-100)


def _lr_at(step: int, cfg: PretrainConfig) -> float:
    warmup = max(1, cfg.steps // 20)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain(
    model, tokenizer, problems: Sequence[AdditionProblem], cfg: PretrainConfig, seed: int, log=print
) -> list[dict]:
    """Train `model` in place on the traces of `problems`; returns its loss curve."""
    model.train()
    data = encode_demonstrations(tokenizer, problems)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.01)
    curve, start, running = [], time.time(), None
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        loss = response_loss(model, *collate(rng.sample(data, cfg.batch_size), tokenizer.pad_token_id))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if (step + 1) % 100 == 0 or step + 1 == cfg.steps:
            curve.append({"step": step + 1, "loss": running, "seconds": time.time() - start})
            log(f"pretrain step {step + 1}/{cfg.steps}  loss {running:.4f}  ({time.time() - start:.0f}s)")
    model.eval()
    return curve


def save_model(model, out_dir: str | Path) -> None:
    """HF format (config, safetensors) next to the tokenizer: loadable by `endo_rl.core.models` like any checkpoint."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config.do_sample = False
    model.save_pretrained(str(out_dir))
