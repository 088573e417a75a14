"""Attention of one new token per row over a static KV cache: PyTorch's SDPA (default), a GQA matrix product or
FlexAttention.

"sdpa": `F.scaled_dot_product_attention` with a boolean mask and `enable_gqa=True`. "gqa": the G = H / K query
heads that share a KV head are the rows of one matrix product, so K and V are read once, in place (the cache
window is a strided view; nothing is copied):

    scores [B*K, G, S] = q [B*K, G, d] @ k^T [B*K, d, S]     (float32 accumulation and output)
    out    [B*K, G, d] = softmax(scale * scores + mask)  @ v [B*K, S, d]

"gqa" was written on the reading that SDPA with an explicit mask and grouped KV heads falls back to its math
backend and repeats K/V per query head. Measured on one H200 (7B shape, batch 64, 2026-11-29, BENCHMARKS.md
section 1): SDPA is the faster of the two, 0.117 vs 0.152 ms for one call at 1,024 slots and 6.37 vs 7.09 ms
per whole decode step, so SDPA is the default and "gqa" stays selectable for other devices and shapes.

"flex": `torch.nn.attention.flex_attention` with no dense mask: a BlockMask that lists every key block of the
window as partial, whose mask_mod reads `key_valid_BS[b, kv_idx]` from the decoder's buffer at run time (so
in-place updates and CUDA-graph replays see the current mask; no block is skipped on a stale snapshot). The G
query heads of a KV head go in as G query rows of that head, so q_len = G < 128 and torch's inductor can lower
it to its split-KV flex-decoding Triton kernel, which reads each KV head once (see `flex_decode_attention`). On
CUDA it runs through one `torch.compile(flex_attention)` per process; elsewhere (CPU tests) flex runs eagerly,
which materializes the scores. Measured on one H200 (batch 64, 1,024 tokens; BENCHMARKS.md section 1, run 3): 7.94 ms per
decode step against SDPA's 6.41 ms, so it stays selectable, not the default.

Shape legend: B batch, H query heads, K KV heads, G = H / K, S window (cache slots), d head dim.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

ATTENTION = ("flex", "gqa", "sdpa")
"""The decode step's attentions: "sdpa" (PyTorch's SDPA with a boolean mask and enable_gqa, the default: the
faster of "sdpa" and "gqa" on an H200), "gqa" (`gqa_decode_attention`) or "flex" (`flex_decode_attention`)."""
FLEX_BLOCK = 128
"""FlexAttention's sparse block size (keys per block) for the window's BlockMask."""
_FLEX_MASKS: dict[tuple, BlockMask] = {}
"""Per key_valid tensor (device, address, shape, strides) and query rows: its BlockMask (`window_block_mask`)."""
_OUT_DTYPE_OK: dict[str, bool] = {}
"""Per device type: whether `torch.bmm(..., out_dtype=torch.float32)` ran for half-precision inputs."""


def bmm_float32(a_ZMN: torch.Tensor, b_ZNP: torch.Tensor) -> torch.Tensor:
    """Batched a @ b accumulated and returned in float32 (float64 stays float64).

    On CUDA, bf16/fp16 inputs go through `torch.bmm(..., out_dtype=torch.float32)`: the half-precision operands
    are read as they are and the float32 scores come straight out of the GEMM. Where that overload is missing
    (CPU, older torch) the operands are upcast first, which gives the same values.
    """
    half = a_ZMN.dtype in (torch.bfloat16, torch.float16)
    kind = a_ZMN.device.type
    if half and kind == "cuda" and _OUT_DTYPE_OK.get(kind, True):
        try:
            out = torch.bmm(a_ZMN, b_ZNP, out_dtype=torch.float32)
            _OUT_DTYPE_OK[kind] = True
            return out
        except (RuntimeError, NotImplementedError, TypeError):  # first call is eager (warm-up, not capture)
            _OUT_DTYPE_OK[kind] = False
    dtype = torch.promote_types(a_ZMN.dtype, torch.float32)
    return torch.bmm(a_ZMN.to(dtype), b_ZNP.to(dtype))


def check_attention(attention: str) -> None:
    """Refuse a decode attention that is not one of `ATTENTION`."""
    if attention not in ATTENTION:
        raise ValueError(f"decode attention must be one of {ATTENTION}, got {attention!r}")


def query_groups(q_BH1d: torch.Tensor, k_BKSd: torch.Tensor) -> tuple[int, int, int, int, int]:
    """(B, H, K, G, d) of one decode step's query and keys; a query that is not one token per row with a
    multiple of K heads is refused."""
    B, H, _, d = q_BH1d.shape
    K = k_BKSd.shape[1]
    if H % K or q_BH1d.shape[2] != 1:
        raise ValueError(f"query {tuple(q_BH1d.shape)} is not one token with a multiple of {K} heads")
    return B, H, K, H // K, d


def gqa_decode_attention(
    q_BH1d: torch.Tensor,
    k_BKSd: torch.Tensor,
    v_BKSd: torch.Tensor,
    key_valid_BS: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """softmax(scale q k^T, keys where `key_valid_BS` is False excluded) v for one query token per row: [B,H,1,d].

    Query head h reads KV head h // G (as transformers' `repeat_kv`). Every row must see at least one key (in
    decoding the new token always sees itself); a row that sees none comes out NaN, as in SDPA. The softmax is
    in float32; probabilities are cast to the value dtype for the second product, as SDPA does.
    """
    B, H, K, G, d = query_groups(q_BH1d, k_BKSd)
    S = k_BKSd.shape[2]
    q_ZGd = q_BH1d.reshape(B * K, G, d)
    k_ZSd, v_ZSd = k_BKSd.flatten(0, 1), v_BKSd.flatten(0, 1)  # views: B and K merge without a copy
    scores_BKGS = bmm_float32(q_ZGd, k_ZSd.transpose(1, 2)).view(B, K, G, S) * scale
    scores_BKGS = scores_BKGS.masked_fill(~key_valid_BS[:, None, None, :], float("-inf"))
    probs_ZGS = scores_BKGS.softmax(-1).to(v_BKSd.dtype).view(B * K, G, S)
    return torch.bmm(probs_ZGS, v_ZSd).view(B, H, 1, d)


def window_block_mask(key_valid_BS: torch.Tensor, q_len: int) -> BlockMask:
    """A BlockMask of `q_len` query rows over all S keys of the window in which every block is partial, its
    mask_mod reading `key_valid_BS[b, kv_idx]` (every query row sees the same keys); made once per (tensor
    device, address, shape, strides, q_len) and cached.

    No block is marked full or left out, so no block is skipped or left unmasked on the strength of what
    `key_valid_BS` held when the mask was made: every block's mask_mod reads the tensor as it is at call time,
    and the decoder's in-place updates (and a CUDA graph's replays) see the same tensors. The cache holds a
    reference to `key_valid_BS`, so a cached address cannot be reused by another tensor; its entries are small
    (B x ceil(S / 128) int32 per window) and live as long as the process.
    """
    B, S = key_valid_BS.shape
    key = (
        key_valid_BS.device,
        key_valid_BS.data_ptr(),
        key_valid_BS.dtype,
        (B, S),
        key_valid_BS.stride(),
        q_len,
    )
    if key not in _FLEX_MASKS:
        n_blocks = -(-S // FLEX_BLOCK)  # the last block may be shorter: flex masks keys past S
        device = key_valid_BS.device
        kv_num_blocks_B11 = torch.full((B, 1, 1), n_blocks, dtype=torch.int32, device=device)
        kv_indices_B11N = torch.arange(n_blocks, dtype=torch.int32, device=device).expand(B, 1, 1, -1)

        def visible(b, h, q_idx, kv_idx):
            return key_valid_BS[b, kv_idx]

        _FLEX_MASKS[key] = BlockMask.from_kv_blocks(
            kv_num_blocks_B11,
            kv_indices_B11N.contiguous(),
            BLOCK_SIZE=FLEX_BLOCK,
            mask_mod=visible,
            seq_lengths=(q_len, S),
        )
    return _FLEX_MASKS[key]


@functools.cache
def _compiled_flex():
    """torch.compile(flex_attention), made on first use and shared by every caller in the process."""
    return torch.compile(flex_attention)


def _flex_fn(device: torch.device):
    """Eager flex_attention off CUDA (tests); on CUDA the compiled one: uncompiled it materializes the whole
    score matrix."""
    return _compiled_flex() if device.type == "cuda" else flex_attention


def flex_decode_attention(
    q_BH1d: torch.Tensor,
    k_BKSd: torch.Tensor,
    v_BKSd: torch.Tensor,
    key_valid_BS: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """`gqa_decode_attention` through FlexAttention: [B, H, 1, d], query head h reading KV head h // G.

    The G query heads of a KV head are passed as G query rows of that head ([B, K, G, d], no enable_gqa): the
    same grouping flex's decoding kernel makes for GQA, but torch's inductor takes that kernel with
    enable_gqa only when G is a power of two (`_use_flex_decoding`), and the 7B shape has G = 7. The batch is
    marked static: the decoding kernel also needs a static batch (a second batch size would otherwise make it
    symbolic). So the compiled function compiles per batch size, at most three times (the first window; then
    the window length symbolic; then the cache strides, for a decoder with another cache length; counted on a
    CPU with a counting backend): dynamo's recompile limit (8) covers two batch sizes. A row that sees no key
    comes out NaN in eager flex.
    """
    B, H, K, G, d = query_groups(q_BH1d, k_BKSd)
    q_BKGd = q_BH1d.reshape(B, K, G, d)
    block_mask = window_block_mask(key_valid_BS, G)
    flex = _flex_fn(q_BH1d.device)
    if flex is not flex_attention:
        for t in (q_BKGd, k_BKSd, v_BKSd):
            torch._dynamo.mark_static(t, 0)
    out_BKGd = flex(q_BKGd, k_BKSd, v_BKSd, block_mask=block_mask, scale=scale)
    return out_BKGd.reshape(B, H, 1, d)


def step_mask(key_valid_BS: torch.Tensor, attention: str, dtype: torch.dtype) -> torch.Tensor:
    """What `decode_attention` takes as its mask, made once per decode step and shared by every layer: for "sdpa"
    an additive [B, 1, 1, S] mask of `dtype` (0 where visible, -inf elsewhere), so SDPA does not convert a
    boolean mask again in each layer (one H200, 7B shape, batch 64, 768 slots: 1.14 vs 1.28 ms of attention per
    step, `bench/decode_breakdown.py`); for "gqa" and "flex" the boolean `key_valid_BS` itself."""
    if attention != "sdpa":
        return key_valid_BS
    bias_BS = torch.zeros(key_valid_BS.shape, dtype=dtype, device=key_valid_BS.device)
    return bias_BS.masked_fill_(~key_valid_BS, float("-inf"))[:, None, None, :]


def decode_attention(q_BH1d, k_BKSd, v_BKSd, key_valid_BS, dims, attention: str = "sdpa") -> torch.Tensor:
    """The decode step's attention over the window, [B, H, 1, d]; `dims` = (heads, KV heads, head dim).

    `key_valid_BS`: the boolean [B, S] mask of visible keys, or for "sdpa" also `step_mask`'s additive one."""
    n_heads, n_kv, head_dim = dims
    if attention == "gqa":
        return gqa_decode_attention(q_BH1d, k_BKSd, v_BKSd, key_valid_BS, head_dim**-0.5)
    if attention == "flex":
        return flex_decode_attention(q_BH1d, k_BKSd, v_BKSd, key_valid_BS, head_dim**-0.5)
    return F.scaled_dot_product_attention(
        q_BH1d,
        k_BKSd,
        v_BKSd,
        attn_mask=key_valid_BS[:, None, None, :] if key_valid_BS.dtype == torch.bool else key_valid_BS,
        scale=head_dim**-0.5,
        enable_gqa=n_kv != n_heads,
    )


def distinct_rows(ids_BP: torch.Tensor, mask_BP: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(rows_U, copies_B) for a batch whose rows repeat (GRPO samples each prompt group_size times): rows_U the
    first row of each distinct (ids, mask) row, copies_B for each row the index in rows_U of its copy, so
    `x_U[copies_B]` is `x_B` for anything computed per row. None when every row is distinct."""
    B = ids_BP.shape[0]
    _, copies_B = torch.unique(torch.cat([ids_BP, mask_BP.to(ids_BP.dtype)], 1), dim=0, return_inverse=True)
    U = int(copies_B.max()) + 1
    if U == B:
        return None
    # The first row of each copy: a stable sort groups the rows by copy in row order (not scatter_reduce, which
    # on CUDA counts as nondeterministic and stops a run with deterministic=true).
    order_B = torch.sort(copies_B, stable=True).indices
    sorted_B = copies_B[order_B]
    first_B = torch.ones_like(sorted_B, dtype=torch.bool)
    first_B[1:] = sorted_B[1:] != sorted_B[:-1]
    return order_B[first_B], copies_B
