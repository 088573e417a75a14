"""Generators: engines that live across training steps behind one narrow interface.

    generator = make_generator(model, backend, batch_size)   # once
    generator.sync_weights(model)                             # after each optimizer step (cheap when unchanged)
    completions = generator.generate(prompt_ids, sampling, stop_ids, pad_id)

`StaticDecoderGenerator` keeps its static-KV-cache decoders (and their CUDA graphs and compiled layer) from one
call to the next. Shapes come from a small fixed set of buckets, so after warm-up nothing is compiled or
captured again: the batch is padded up to a power of two (at most `batch_size`), the prompt width rounded up
to a multiple of `prompt_bucket`, the cache grows in steps of `length_bucket` slots only when a request
needs more, and finished rows are dropped in halvings of the batch (`static.generate_rows`). `HFGenerator` is
transformers' `generate` behind the same interface. Another engine (a vLLM-style server) drops in beside them.

Completions come out in input order; micro-batches are formed from length-sorted prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from tqdm.auto import tqdm

from endo_rl.generation import static as static_decode
from endo_rl.generation.decode_attention import check_attention
from endo_rl.generation.hf import hf_rows
from endo_rl.generation.lora_merge import LoraMerge
from endo_rl.generation.sampling import Completion, SamplingConfig, cut_at_stop

RowsFn = Callable[[list[Sequence[int]]], list[list[int]]]


class Generator(Protocol):
    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the next `generate` sample from `model`'s current weights."""

    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        sampling: SamplingConfig,
        stop_ids: Sequence[int],
        pad_id: int,
        progress: bool = False,
    ) -> list[Completion]:
        """One completion per prompt (repeat a prompt to sample it several times), in input order."""


def _generate_sorted(
    prompt_ids: Sequence[Sequence[int]],
    batch_size: int,
    rows_fn: RowsFn,
    stop_ids: Sequence[int],
    max_new_tokens: int,
    progress: bool,
) -> list[Completion]:
    """Length-sorted micro-batches through `rows_fn` (generated columns per row); completions in input order."""
    if not prompt_ids:
        return []
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    out: list[Completion | None] = [None] * len(order)
    stops = set(stop_ids)
    bar = tqdm(total=len(order), desc="generating", unit="seq", disable=not progress)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        rows = rows_fn([prompt_ids[i] for i in idx])
        for row, i in zip(rows, idx, strict=True):
            tokens, truncated = cut_at_stop(row, stops, max_new_tokens)
            out[i] = Completion(prompt_index=i, token_ids=tokens, truncated=truncated)
        bar.update(len(idx))
    bar.close()
    return out  # type: ignore[return-value]


class HFGenerator:
    """transformers' `generate` (dynamic cache) on left-padded micro-batches of `batch_size`."""

    def __init__(self, model: torch.nn.Module, batch_size: int = 16):
        self.model, self.batch_size = model, batch_size

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.model = model

    def _rows(self, prompts, sampling: SamplingConfig, stop_ids, pad_id: int) -> list[list[int]]:
        return hf_rows(self.model, prompts, sampling, stop_ids, pad_id)

    @torch.no_grad()
    def generate(self, prompt_ids, sampling, stop_ids, pad_id, progress=False) -> list[Completion]:
        def rows_fn(prompts):
            return self._rows(prompts, sampling, stop_ids, pad_id)

        return _generate_sorted(
            prompt_ids, self.batch_size, rows_fn, stop_ids, sampling.max_new_tokens, progress
        )


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class StaticDecoderGenerator:
    """The static-KV-cache CUDA-graph decoder (`generation.static`), kept across calls with bucketed shapes."""

    def __init__(
        self,
        model: torch.nn.Module,
        batch_size: int = 64,
        prompt_bucket: int = 64,
        length_bucket: int = 256,
        window: int = 128,
        use_cuda_graph: bool = True,
        compile: bool | str | object = True,
        attention: str = "sdpa",
        fuse: bool = True,
        compact_min_rows: int = 8,
    ):
        if not static_decode.supports(model):
            raise ValueError(
                f"generation backend 'static' does not support model type {model.config.model_type!r}"
            )
        check_attention(attention)
        self.model, self.batch_size = model, batch_size
        self.prompt_bucket, self.length_bucket, self.window = prompt_bucket, length_bucket, window
        self.use_cuda_graph, self.compile, self.attention = use_cuda_graph, compile, attention
        self.compact_min_rows = compact_min_rows
        """Finished rows are dropped down to this many decoded rows (`static.generate_rows`; 0: never)."""
        self.decoders: dict[int, static_decode.StaticDecoder] = {}
        """One decoder per batch bucket; its cache only grows."""
        self.lora = LoraMerge(fuse)
        """LoRA-wrapped projections' merged weights and the fused projections (`fuse`): one copy shared by every
        bucket's decoder."""
        self.lora.refresh(model)

    def batch_bucket(self, n: int) -> int:
        """The smallest power of two >= n, capped at batch_size."""
        return min(self.batch_size, 1 << max(0, n - 1).bit_length())

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.model = model
        self.lora.refresh(model)
        for decoder in self.decoders.values():
            decoder.sync_weights(model)

    def _decoder(self, batch: int, slots: int) -> static_decode.StaticDecoder:
        decoder = self.decoders.get(batch)
        if decoder is None or decoder.max_len < slots or decoder.model is not self.model:
            self.decoders.pop(batch, None)  # free the old cache before allocating the new one
            decoder = static_decode.StaticDecoder(
                self.model,
                batch,
                _round_up(slots, self.length_bucket),
                self.use_cuda_graph,
                self.compile,
                self.window,
                lora=self.lora,
                attention=self.attention,
            )
            self.decoders[batch] = decoder
        return decoder

    @torch.no_grad()
    def generate(self, prompt_ids, sampling, stop_ids, pad_id, progress=False) -> list[Completion]:
        if not prompt_ids:
            return []
        widest = _round_up(max(len(p) for p in prompt_ids), self.prompt_bucket)
        slots = (
            widest + sampling.max_new_tokens
        )  # one spare: prefill leaves P slots, decode fills max_new - 1

        def rows_fn(prompts):
            width = _round_up(max(len(p) for p in prompts), self.prompt_bucket)
            decoder = self._decoder(self.batch_bucket(len(prompts)), slots)
            return static_decode.generate_rows(
                decoder, prompts, sampling, stop_ids, pad_id, width, self.compact_min_rows
            )

        return _generate_sorted(
            prompt_ids, self.batch_size, rows_fn, stop_ids, sampling.max_new_tokens, progress
        )


def resolve_backend(model: torch.nn.Module, backend: str) -> str:
    """'auto' -> 'static' on CUDA for supported models, else 'hf'; 'static' on an unsupported model is an error."""
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


def make_generator(
    model: torch.nn.Module,
    backend: str = "auto",
    batch_size: int = 16,
    decode_attention: str = "sdpa",
    compact_min_rows: int = 8,
) -> Generator:
    """The engine for `backend` ('auto', 'static' or 'hf'; see `resolve_backend`); `decode_attention` and
    `compact_min_rows` are the static backend's (`decode_attention.ATTENTION`, `static.generate_rows`)."""
    if resolve_backend(model, backend) == "static":
        return StaticDecoderGenerator(
            model, batch_size, attention=decode_attention, compact_min_rows=compact_min_rows
        )
    return HFGenerator(model, batch_size)


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
    """One-shot generation (the evaluator's): a generator made for this call. A loop holds its own instead."""
    generator = make_generator(model, backend, batch_size)
    return generator.generate(prompt_ids, sampling, stop_ids, pad_id, progress)
