"""Batched generation shared by training rollouts and the evaluator.

Prompts go in as token ids and completions come out as token ids with a finish reason, so callers never
re-tokenize text (re-tokenizing a decoded completion does not always give back the sampled ids, and the
reward and the loss must score exactly the sampled tokens).

A completion ends at the first stop token (kept, so EOS is scored and trained on) or at `max_new_tokens`
(`truncated=True`). Padding after the end is stripped here, by position, never by comparing with the pad id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm


@dataclass
class SamplingConfig:
    """Decoding settings; temperature 0 means greedy."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0


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


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]],
    sampling: SamplingConfig,
    stop_ids: Sequence[int],
    pad_id: int,
    batch_size: int = 16,
    progress: bool = False,
) -> list[Completion]:
    """One completion per prompt (repeat a prompt to sample it several times), in input order.

    Prompts are sorted by length into micro-batches of `batch_size` and left-padded.
    """
    device = next(model.parameters()).device
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    out: list[Completion | None] = [None] * len(order)
    greedy = sampling.temperature == 0
    kwargs = dict(
        max_new_tokens=sampling.max_new_tokens,
        do_sample=not greedy,
        eos_token_id=list(stop_ids),
        pad_token_id=pad_id,
        use_cache=True,
    )
    if not greedy:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
    else:  # unset the model's own sampling defaults so greedy really is greedy and quiet
        kwargs.update(temperature=None, top_p=None, top_k=None)
    bar = tqdm(total=len(order), desc="generating", unit="seq", disable=not progress)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(prompt_ids[i]) for i in idx)
        input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, i in enumerate(idx):
            n = len(prompt_ids[i])
            input_ids[row, width - n :] = torch.tensor(list(prompt_ids[i]))
            attention_mask[row, width - n :] = 1
        sequences = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **kwargs
        )
        for row, i in enumerate(idx):
            tokens, truncated = _cut(sequences[row, width:].tolist(), set(stop_ids), sampling.max_new_tokens)
            out[i] = Completion(prompt_index=i, token_ids=tokens, truncated=truncated)
        bar.update(len(idx))
    bar.close()
    return out  # type: ignore[return-value]
