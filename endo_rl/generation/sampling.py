"""Sampling settings and completions, shared by every generator (`generation.generator`).

Prompts go in as token ids and completions come out as token ids with a finish reason, so callers never
re-tokenize text (re-tokenizing a decoded completion does not always give back the sampled ids, and the
reward and the loss must score exactly the sampled tokens).

A completion ends at the first stop token (kept, so EOS is scored and trained on) or at `max_new_tokens`
(`truncated=True`). Padding after the end is stripped here, by position, never by comparing with the pad id.
"""

from __future__ import annotations

from dataclasses import dataclass

from endo_rl.core.config import SamplingConfig

__all__ = ["Completion", "SamplingConfig", "cut_at_stop"]


@dataclass
class Completion:
    prompt_index: int
    token_ids: list[int]
    truncated: bool
    """True when generation hit max_new_tokens before a stop token."""


def cut_at_stop(row: list[int], stop_ids: set[int], max_new_tokens: int) -> tuple[list[int], bool]:
    """The completion up to and including its first stop token, and whether it was truncated instead."""
    for i, tok in enumerate(row):
        if tok in stop_ids:
            return row[: i + 1], False
    return row[:max_new_tokens], True
