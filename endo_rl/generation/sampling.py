"""Batched generation shared by training rollouts and the evaluator.

Prompts go in as token ids and completions come out as token ids with a finish reason, so callers never
re-tokenize text (re-tokenizing a decoded completion does not always give back the sampled ids, and the
reward and the loss must score exactly the sampled tokens).

A completion ends at the first stop token (kept, so EOS is scored and trained on) or at `max_new_tokens`
(`truncated=True`). Padding after the end is stripped here, by position, never by comparing with the pad id.

Both backends sample from exactly the configured distribution: softmax(logits / temperature), then top-k, then
top-p, nothing else. The HF backend does not inherit the checkpoint's generation_config (repetition penalty,
minimum length and the like would make the rollouts come from another distribution than the one the loss uses).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from endo_rl.core.batch import left_pad
from endo_rl.core.config import SamplingConfig

__all__ = ["Completion", "SamplingConfig", "generate", "resolve_backend"]


@dataclass
class Completion:
    prompt_index: int
    token_ids: list[int]
    truncated: bool
    """True when generation hit max_new_tokens before a stop token."""


def _cut(row: list[int], stop_ids: set[int], max_new_tokens: int) -> tuple[list[int], bool]:
    for i, tok in enumerate(row):
        if tok in stop_ids:
            return row[: i + 1], False
    return row[:max_new_tokens], True


def hf_generation_config(sampling: SamplingConfig, stop_ids: Sequence[int], pad_id: int) -> GenerationConfig:
    """A complete GenerationConfig for `sampling`: temperature, top-k, top-p and the stop tokens, nothing else.

    Every logits processor HF could add (repetition penalty, n-gram blocking, minimum length, suppressed or
    forced tokens, min-p, typical-p, ...) is left off, so the HF backend samples from the same distribution as
    the static backend and as the loss assumes.
    """
    greedy = sampling.temperature == 0
    return GenerationConfig(
        max_new_tokens=sampling.max_new_tokens,
        do_sample=not greedy,
        # greedy: sampling fields unset (None is not refilled from the checkpoint: see below)
        temperature=None if greedy else sampling.temperature,
        top_p=None if greedy else sampling.top_p,
        top_k=None if greedy else sampling.top_k,
        num_beams=1,
        num_return_sequences=1,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
        use_cache=True,
    )


@contextlib.contextmanager
def _without_checkpoint_defaults(model: torch.nn.Module, config: GenerationConfig):
    """Make `config` the model's own generation_config for the call (on every wrapper that holds one).

    `generate` fills each field left None from `model.generation_config`, i.e. from the checkpoint's
    generation_config.json (several chat checkpoints ship repetition_penalty, top_k, min_p ...). Passing a
    config is not enough to stop that; replacing the defaults for the duration of the call is.
    """
    owners = [m for m in model.modules() if "generation_config" in vars(m)]
    saved = [vars(m)["generation_config"] for m in owners]
    for m in owners:
        m.generation_config = config
    try:
        yield
    finally:
        for m, original in zip(owners, saved, strict=True):
            m.generation_config = original


def _hf_rows(model, prompts, sampling: SamplingConfig, stop_ids, pad_id: int) -> list[list[int]]:
    """HF generate on one left-padded micro-batch; the generated columns of each row."""
    config = hf_generation_config(sampling, stop_ids, pad_id)
    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad(prompts, pad_id)
    with _without_checkpoint_defaults(model, copy.deepcopy(config)):
        sequences = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), generation_config=config
        )
    return sequences[:, input_ids.shape[1] :].tolist()


def resolve_backend(model: torch.nn.Module, backend: str) -> str:
    """'auto' -> 'static' on CUDA for supported models, else 'hf'; 'static' on an unsupported model is an error."""
    from endo_rl.generation import static as static_decode

    if backend not in ("auto", "hf", "static"):
        raise ValueError(f"generation backend must be 'auto', 'hf' or 'static', got {backend!r}")
    if backend == "static" and not static_decode.supports(model):
        raise ValueError(
            f"generation backend 'static' does not support model type {model.config.model_type!r}"
        )
    if backend == "auto":
        on_cuda = next(model.parameters()).device.type == "cuda"
        return "static" if on_cuda and static_decode.supports(model) else "hf"
    return backend


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    sampling: SamplingConfig,
    stop_ids: Sequence[int],
    pad_id: int,
    batch_size: int = 16,
    progress: bool = False,
    backend: str = "auto",
) -> list[Completion]:
    """One completion per prompt (repeat a prompt to sample it several times), in input order.

    Prompts are sorted by length into micro-batches of `batch_size` and left-padded. `backend="static"` decodes
    with a preallocated KV cache and CUDA graphs (`endo_rl.generation.static`; Llama/Qwen2-style models only);
    "auto" picks it on CUDA when the model supports it.
    """
    backend = resolve_backend(model, backend)
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    decoder = None
    if backend == "static":
        from endo_rl.generation import static as static_decode

        max_len = max(len(p) for p in prompt_ids) + sampling.max_new_tokens
        decoder = static_decode.StaticDecoder(model, min(batch_size, len(order)), max_len)
    out: list[Completion | None] = [None] * len(order)
    bar = tqdm(total=len(order), desc="generating", unit="seq", disable=not progress)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        prompts = [prompt_ids[i] for i in idx]
        if decoder is None:
            rows = _hf_rows(model, prompts, sampling, stop_ids, pad_id)
        else:
            rows = static_decode.generate_rows(decoder, prompts, sampling, stop_ids, pad_id)
        for row, i in zip(rows, idx, strict=True):
            tokens, truncated = _cut(row, set(stop_ids), sampling.max_new_tokens)
            out[i] = Completion(prompt_index=i, token_ids=tokens, truncated=truncated)
        bar.update(len(idx))
    bar.close()
    return out  # type: ignore[return-value]
