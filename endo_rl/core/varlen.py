"""Attention for packed batches: causal inside each sequence of one concatenated row, with no mask built.

A packed `PackedBatch` (`padding_side="packed"`) holds B sequences end to end in one row of N tokens, their
boundaries in `cu_seqlens_S`. Attention must be block-diagonal causal: token t of sequence b attends to the
tokens of b at or before t, never to another sequence. `varlen_attention_forward` does that from the
boundaries alone, through FlashAttention's variable-length kernel on CUDA (fp16/bf16) and an exact loop of
per-sequence SDPA calls elsewhere: no padding is computed and no [N, N] mask exists.

It is registered with transformers as the attention implementation `VARLEN` (`AttentionInterface`), and the
models switch to it only inside `varlen_attention(model)`: generation and evaluation keep their own
implementation (SDPA). transformers builds no mask for an implementation without a registered mask function
(`masking_utils._preprocess_mask_arguments`), and the decoder passes the boundaries it is given
(`PackedBatch.decoder_inputs`, named as transformers' FlashAttentionKwargs) through every layer to the
attention call, gradient checkpointing included.

Shape legend: N tokens of the packed row, H query heads, K key/value heads, d head size, S = B + 1 boundaries.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PretrainedConfig

VARLEN = "endo_rl_varlen"
"""The name of the packed-sequence attention among transformers' attention implementations."""

REPEAT_KV_FOR_FLASH = False
"""Repeat the K/V heads up to the query heads before the flash kernel. FlashAttention-2 serves grouped-query
attention itself (query heads a multiple of key/value heads), so this stays off unless a kernel rejects it."""


def _flash(q_NHd, k_NKd, v_NKd, cu_seqlens_S, max_seqlen: int, scale: float) -> torch.Tensor:
    """FlashAttention-2's varlen forward as aten exposes it (its backward is registered with autograd). Only the
    first ten positional arguments and `scale`: the keyword arguments after `scale` differ between torch
    releases."""
    if REPEAT_KV_FOR_FLASH and k_NKd.shape[1] != q_NHd.shape[1]:
        groups = q_NHd.shape[1] // k_NKd.shape[1]
        k_NKd, v_NKd = k_NKd.repeat_interleave(groups, 1), v_NKd.repeat_interleave(groups, 1)
    out = torch.ops.aten._flash_attention_forward(
        q_NHd, k_NKd, v_NKd, cu_seqlens_S, cu_seqlens_S, max_seqlen, max_seqlen, 0.0, True, False, scale=scale
    )
    return out[0]


@torch.compiler.disable  # a loop over the boundaries' values: compiled, it would recompile for each new set
def _sdpa_per_sequence(q_1HNd, k_1KNd, v_1KNd, cu_seqlens_S, scale: float) -> torch.Tensor:
    """Causal SDPA on each sequence's slice of the row, [N, H, d]: exact, for CPUs and dtypes flash lacks.
    Under `model.compile_layers` it runs eagerly between the compiled parts of a layer."""
    gqa = k_1KNd.shape[1] != q_1HNd.shape[1]
    bounds = cu_seqlens_S.tolist()
    parts = [
        F.scaled_dot_product_attention(
            q_1HNd[:, :, s:e],
            k_1KNd[:, :, s:e],
            v_1KNd[:, :, s:e],
            is_causal=True,
            scale=scale,
            enable_gqa=gqa,
        )
        for s, e in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(parts, dim=2)[0].transpose(0, 1)


def uses_flash(query: torch.Tensor) -> bool:
    """Whether `varlen_attention_forward` takes the flash kernel for this query (else the per-sequence loop):
    fp16/bf16 on a CUDA GPU of compute capability 8.0 or later (PyTorch's FlashAttention-2 kernels need it)."""
    return (
        query.is_cuda
        and query.dtype in (torch.float16, torch.bfloat16)
        and torch.cuda.get_device_capability(query.device) >= (8, 0)
    )


def varlen_attention_forward(
    module: torch.nn.Module,
    query_1HNd: torch.Tensor,
    key_1KNd: torch.Tensor,
    value_1KNd: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    max_length_q: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function protocol: [1, H, N, d] query, [1, K, N, d] key/value in, the
    [1, N, H, d] output out (as `sdpa_attention_forward` returns it) and no attention weights."""
    if cu_seq_lens_q is None or query_1HNd.shape[0] != 1:
        raise RuntimeError(
            f"the {VARLEN!r} attention needs one packed row and its sequence boundaries (cu_seq_lens_q); got "
            f"a query of shape {tuple(query_1HNd.shape)}: decode packed batches only, with "
            "PackedBatch.decoder_inputs(), and other inputs outside varlen_attention()"
        )
    # what the packed passes never ask for: fail loudly rather than attend across sequences or drop a window
    assert attention_mask is None, "a packed batch gets no attention mask"
    assert cu_seq_lens_k is None or cu_seq_lens_k is cu_seq_lens_q, "self-attention: the same boundaries"
    assert sliding_window is None and dropout == 0.0, "no sliding window, no attention dropout"
    scale = scaling if scaling is not None else query_1HNd.shape[-1] ** -0.5
    if uses_flash(query_1HNd):
        q_NHd, k_NKd, v_NKd = (x[0].transpose(0, 1) for x in (query_1HNd, key_1KNd, value_1KNd))
        out_NHd = _flash(q_NHd, k_NKd, v_NKd, cu_seq_lens_q, int(max_length_q), scale)
    else:
        out_NHd = _sdpa_per_sequence(query_1HNd, key_1KNd, value_1KNd, cu_seq_lens_q, scale)
    return out_NHd[None], None


AttentionInterface.register(VARLEN, varlen_attention_forward)


def _configs(model: torch.nn.Module) -> list[PretrainedConfig]:
    """Every distinct model config the modules of `model` hold (a PEFT or DDP wrapper's inner model's too), and
    their sub-configs, each after the config holding it."""
    seen: dict[int, PretrainedConfig] = {}
    todo = [getattr(m, "config", None) for m in model.modules()]
    while todo:
        cfg = todo.pop(0)
        if isinstance(cfg, PretrainedConfig) and id(cfg) not in seen:
            seen[id(cfg)] = cfg
            todo.extend(getattr(cfg, key, None) for key in cfg.sub_configs)
    return list(seen.values())


@contextlib.contextmanager
def varlen_attention(model: torch.nn.Module, enabled: bool = True):
    """Inside the block, `model`'s attention layers run `varlen_attention_forward`; restored after, even on
    error. The layers read `config._attn_implementation` at each call, so the block must also hold the
    backward of a gradient-checkpointed forward: its recompute runs attention again. `enabled=False`: no-op."""
    if not enabled:
        yield
        return
    configs = _configs(model)
    if not configs:
        raise ValueError(f"{type(model).__name__} holds no transformers config: cannot switch its attention")
    before = [cfg._attn_implementation for cfg in configs]
    try:
        for cfg in configs:
            cfg._attn_implementation = VARLEN  # the setter sets the sub-configs too
        yield
    finally:
        # holders first: a config's setter overwrites its sub-configs, which then get their own value back
        for cfg, impl in zip(configs, before):
            cfg._attn_implementation = impl


def check_active(model: torch.nn.Module) -> None:
    """Raise unless `model` attends with `VARLEN` (a packed batch decoded with another implementation would
    silently attend across its sequences, or build the [N, N] mask that packing avoids)."""
    impls = {cfg._attn_implementation for cfg in _configs(model)}
    if impls != {VARLEN}:
        raise RuntimeError(
            f"a packed batch needs the {VARLEN!r} attention, the model has {sorted(map(str, impls))}: run the "
            "pass inside core.varlen.varlen_attention(model)"
        )
