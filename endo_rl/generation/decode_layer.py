"""One decoder layer of the static decoder's decode step, for one new token per row.

The layer's tensors travel as a `LayerWeights` tuple, so one compiled function serves every layer: the halves
around the attention (`pre_attention`, `post_attention`) have shapes that depend on the batch alone, never on
the cache length, and `compiled_layer_fns` compiles them once per process. With stacked projections
(`lora_merge.LoraMerge(fuse=True)`) Q/K/V are one GEMM.

Shape legend: B batch, H heads, K KV heads, d head dim, D hidden.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from endo_rl.generation.decode_attention import decode_attention
from endo_rl.generation.lora_merge import FUSED, is_lora_linear, projections


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class LayerWeights(NamedTuple):
    """One decoder layer's tensors, passed as arguments so one compiled function serves every layer.

    With fused projections (`LoraMerge(fuse=True)`), `wqkv` / `bqkv` hold Q, K and V stacked by rows and the
    separate fields they replace are None."""

    ln1: torch.Tensor
    wq: torch.Tensor | None
    bq: torch.Tensor | None
    wk: torch.Tensor | None
    bk: torch.Tensor | None
    wv: torch.Tensor | None
    bv: torch.Tensor | None
    wo: torch.Tensor
    ln2: torch.Tensor
    wg: torch.Tensor | None
    wu: torch.Tensor | None
    wd: torch.Tensor
    wqkv: torch.Tensor | None = None
    bqkv: torch.Tensor | None = None


def layer_weights(layer: torch.nn.Module, merged: dict[str, torch.Tensor] | None = None) -> LayerWeights:
    """The layer's tensors, detached; `merged` maps a LoRA-wrapped projection's name to its effective weight
    (its bias stays the base layer's) and "qkv" / "qkv_bias" to stacked weights (`LoraMerge`)."""
    merged = merged or {}
    p = projections(layer)
    covered = {part for name, parts in FUSED.items() if name in merged for part in parts}
    if missing := [n for n, m in p.items() if is_lora_linear(m) and n not in merged and n not in covered]:
        raise ValueError(f"LoRA-wrapped {missing} without a merged weight: refresh the LoraMerge first")
    base = {n: m.base_layer if is_lora_linear(m) else m for n, m in p.items()}
    w = {n: None if n in covered else merged.get(n, base[n].weight) for n in p}
    b = {n: None if n in covered else base[n].bias for n in ("q_proj", "k_proj", "v_proj")}
    tensors = (
        layer.input_layernorm.weight,
        *(w["q_proj"], b["q_proj"], w["k_proj"], b["k_proj"], w["v_proj"], b["v_proj"], w["o_proj"]),
        layer.post_attention_layernorm.weight,
        *(w["gate_proj"], w["up_proj"], w["down_proj"]),
        *(merged.get("qkv"), merged.get("qkv_bias")),
    )
    return LayerWeights(*(None if t is None else t.detach() for t in tensors))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """As Llama/Qwen2 compute it: in float32, cast back before the weight."""
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def pre_attention(x_B1D, w: LayerWeights, cos_B1d, sin_B1d, dims, eps):
    """Norm, Q/K/V projections and rotary for one new token per row: q [B, H, 1, d], k and v [B, K, 1, d].

    `dims` = (heads, KV heads, head dim). Its shapes depend on the batch alone, never on the cache length, so
    one compilation serves every prompt width and every attention window.
    """
    n_heads, n_kv, head_dim = dims
    B = x_B1D.shape[0]
    h = rms_norm(x_B1D, w.ln1, eps)
    if w.wqkv is not None:
        q, k, v = F.linear(h, w.wqkv, w.bqkv).split(
            [n_heads * head_dim, n_kv * head_dim, n_kv * head_dim], -1
        )
    else:
        q, k, v = F.linear(h, w.wq, w.bq), F.linear(h, w.wk, w.bk), F.linear(h, w.wv, w.bv)
    q = q.reshape(B, 1, n_heads, head_dim).transpose(1, 2)
    k = k.reshape(B, 1, n_kv, head_dim).transpose(1, 2)
    v = v.reshape(B, 1, n_kv, head_dim).transpose(1, 2)
    cos, sin = cos_B1d.unsqueeze(1), sin_B1d.unsqueeze(1)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin, v


def post_attention(x_B1D, attn_BH1d, w: LayerWeights, eps):
    """Output projection, residual, norm and SiLU MLP, residual."""
    B = x_B1D.shape[0]
    x_B1D = x_B1D + F.linear(attn_BH1d.transpose(1, 2).reshape(B, 1, -1), w.wo)
    h = rms_norm(x_B1D, w.ln2, eps)
    return x_B1D + F.linear(F.silu(F.linear(h, w.wg)) * F.linear(h, w.wu), w.wd)


def decode_layer(
    fns, x_B1D, w, k_cache, v_cache, cos_B1d, sin_B1d, slot_1, valid_BS, dims, eps, attention="sdpa"
):
    """One decoder layer for one new token per row, writing its key/value at cache slot `slot_1`.

    `fns` = (pre_attention, post_attention), compiled or not: torch.compile fuses their elementwise work
    (norms, rotary, SiLU) so a CUDA-graph replay launches a few kernels per layer instead of ~40. The cache
    write (in place, one slot) and the attention over the window (`decode_attention`: "sdpa", "gqa" or "flex") stay
    outside the compiled code.
    """
    pre, post = fns
    q, k, v = pre(x_B1D, w, cos_B1d, sin_B1d, dims, eps)
    k_cache.index_copy_(2, slot_1, k)
    v_cache.index_copy_(2, slot_1, v)
    out = decode_attention(q, k_cache, v_cache, valid_BS, dims, attention)
    return post(x_B1D, out, w, eps)


_COMPILED: dict = {}


def compiled_layer_fns(backend) -> tuple:
    """(pre_attention, post_attention) compiled once per process and backend, shared by every decoder.

    Dynamo keys its cache on a function's code, so shared compiled objects keep the count of compilations
    bounded: their shapes depend only on the batch, and a second batch size makes the batch dimension symbolic
    (automatic dynamic shapes); a batch of one is specialized apart.
    """
    key = backend if isinstance(backend, str) else id(backend)
    if key not in _COMPILED:
        _COMPILED[key] = tuple(torch.compile(f, backend=backend) for f in (pre_attention, post_attention))
    return _COMPILED[key]
