"""GQA and flex decode attention against a float64 brute-force loop and against SDPA (math backend) on CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from endo_rl.generation.decode_attention import (
    bmm_float32,
    decode_attention,
    flex_decode_attention,
    gqa_decode_attention,
    window_block_mask,
)


def brute_force_BH1d(q, k, v, valid, scale):
    """Loop over rows and query heads in float64; head h reads KV head h // (H / K)."""
    B, H, _, d = q.shape
    K, S = k.shape[1], k.shape[2]
    out = torch.zeros(B, H, 1, d, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            kv = h // (H // K)
            scores = [
                scale * sum(float(q[b, h, 0, i]) * float(k[b, kv, s, i]) for i in range(d))
                if valid[b, s]
                else None
                for s in range(S)
            ]
            top = max(x for x in scores if x is not None)
            weights = [0.0 if x is None else math.exp(x - top) for x in scores]
            total = sum(weights)
            for s in range(S):
                out[b, h, 0] += weights[s] / total * v[b, kv, s].double()
    return out


def left_padded_valid(B, S, generator):
    """Each row: some left padding, then visible keys to the end (the last key always visible)."""
    valid = torch.ones(B, S, dtype=torch.bool)
    for b in range(B):
        valid[b, : int(torch.randint(0, S - 1, (1,), generator=generator))] = False
    valid[0, 1] = False  # a hole inside a row is masked too
    valid[0, -1] = True
    return valid


def inputs(B, H, K, S, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, 1, d, generator=g).to(dtype)
    # the cache window is a strided view of a longer cache, as in the decoder
    k = torch.randn(B, K, S + 5, d, generator=g).to(dtype)[:, :, :S]
    v = torch.randn(B, K, S + 5, d, generator=g).to(dtype)[:, :, :S]
    return q, k, v, left_padded_valid(B, S, g)


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (14, 2)])  # G = 1, 2, 7
def test_matches_float64_brute_force(heads, kv_heads):
    q, k, v, valid = inputs(3, heads, kv_heads, 9, 8, torch.float64)
    got = gqa_decode_attention(q, k, v, valid, 8**-0.5)
    assert got.shape == (3, heads, 1, 8) and got.dtype == torch.float64
    torch.testing.assert_close(got, brute_force_BH1d(q, k, v, valid, 8**-0.5), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (28, 4)])
def test_half_and_single_precision_match_brute_force_and_sdpa(dtype, tol, heads, kv_heads):
    q, k, v, valid = inputs(4, heads, kv_heads, 33, 16, dtype, seed=1)
    got = gqa_decode_attention(q, k, v, valid, 0.25)
    assert got.dtype == dtype
    want = brute_force_BH1d(q, k, v, valid, 0.25)
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        sdpa = F.scaled_dot_product_attention(
            q, k, v, attn_mask=valid[:, None, None, :], scale=0.25, enable_gqa=heads != kv_heads
        )
    torch.testing.assert_close(got.double(), sdpa.double(), rtol=tol, atol=tol)


def test_bf16_scores_are_float32():
    """The score product keeps float32 accumulation and output for half-precision operands."""
    g = torch.Generator().manual_seed(2)
    a = torch.randn(2, 3, 64, generator=g).bfloat16()
    b = torch.randn(2, 64, 5, generator=g).bfloat16()
    out = bmm_float32(a, b)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), a.double() @ b.double(), rtol=1e-6, atol=1e-5)


def test_masked_keys_do_not_matter():
    q, k, v, valid = inputs(2, 4, 2, 7, 8, torch.float32, seed=3)
    noisy_k, noisy_v = k.clone(), v.clone()
    noisy_k[~valid[:, None, :, None].expand_as(k)] = 1e4
    noisy_v[~valid[:, None, :, None].expand_as(v)] = 7.0
    torch.testing.assert_close(
        gqa_decode_attention(q, noisy_k, noisy_v, valid, 0.3),
        gqa_decode_attention(q, k, v, valid, 0.3),
    )


def test_rejects_heads_not_a_multiple_of_kv_heads():
    q, k, v, valid = inputs(1, 4, 2, 3, 8, torch.float32)
    with pytest.raises(ValueError, match="multiple of 3"):
        gqa_decode_attention(q[:, :4], k[:, :1].expand(1, 3, 3, 8), v[:, :1].expand(1, 3, 3, 8), valid, 1.0)


@pytest.mark.parametrize("width", [9, 128, 300])  # 300: three key blocks, the last one partly past the window
@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (14, 2)])  # G = 1, 2, 7
def test_flex_matches_float64_brute_force(heads, kv_heads, width):
    q, k, v, valid = inputs(3, heads, kv_heads, width, 8, torch.float64, seed=width)
    got = flex_decode_attention(q, k, v, valid, 8**-0.5)
    assert got.shape == (3, heads, 1, 8) and got.dtype == torch.float64
    torch.testing.assert_close(got, brute_force_BH1d(q, k, v, valid, 8**-0.5), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_flex_matches_sdpa_and_gqa(dtype, tol):
    q, k, v, valid = inputs(4, 28, 4, 200, 16, dtype, seed=5)
    dims = (28, 4, 16)
    flex = decode_attention(q, k, v, valid, dims, "flex")
    assert flex.dtype == dtype
    for other in ("sdpa", "gqa"):
        want = decode_attention(q, k, v, valid, dims, other)
        torch.testing.assert_close(flex.double(), want.double(), rtol=tol, atol=tol)


def test_flex_block_mask_is_all_partial_blocks_and_cached():
    """Every key block is listed and none is full, so flex applies the mask_mod to all of them; the same
    tensor gets the same BlockMask back."""
    valid = torch.ones(2, 300, dtype=torch.bool)
    mask = window_block_mask(valid, 3)
    assert mask.full_kv_num_blocks is None
    assert mask.kv_num_blocks.flatten().tolist() == [3, 3]
    assert mask.kv_indices.flatten().tolist() == [0, 1, 2] * 2
    assert mask.shape == (2, 1, 3, 300)
    assert window_block_mask(valid, 3) is mask
    assert window_block_mask(valid[:, :128], 3) is not mask  # another window, another mask


def test_flex_follows_in_place_updates_of_key_valid():
    """As in the decoder: one key_valid buffer, windows taken as fresh views of it, updated in place between
    calls. The cached BlockMask reads the buffer as it is now, not as it was when the mask was made."""
    q, k, v, valid = inputs(3, 4, 2, 20, 8, torch.float64, seed=7)
    buffer_BS = torch.zeros(3, 32, dtype=torch.bool)
    buffer_BS[:, :20] = valid
    buffer_BS[:, 19] = False  # the slot the next step writes
    first = flex_decode_attention(q, k, v, buffer_BS[:, :20], 0.3)
    mask = window_block_mask(buffer_BS[:, :20], 2)
    buffer_BS.index_fill_(1, torch.tensor([19]), True)  # the decoder writes the new slot
    buffer_BS[1, :15] = False  # and a row's visible keys change
    second = flex_decode_attention(q, k, v, buffer_BS[:, :20], 0.3)
    assert window_block_mask(buffer_BS[:, :20], 2) is mask
    torch.testing.assert_close(
        second, brute_force_BH1d(q, k, v, buffer_BS[:, :20], 0.3), rtol=1e-10, atol=1e-10
    )
    assert not torch.allclose(first, second)


def test_compiled_flex_compiles_at_most_three_times_per_batch_size(monkeypatch):
    """As on CUDA (batch marked static), with a counting backend: windows of growing length and decoders of
    other cache lengths (other strides) add at most two compilations to a batch size's first."""
    from torch._dynamo.testing import CompileCounter

    from endo_rl.generation import decode_attention as module

    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(module.flex_attention, backend=counter)
    monkeypatch.setattr(module, "_flex_fn", lambda device: compiled)
    counts = []
    for B, max_len in [(4, 384), (4, 512), (4, 640), (2, 384), (2, 640), (3, 128)]:
        valid_BS = torch.ones(B, max_len, dtype=torch.bool)
        cache = torch.randn(B, 2, max_len, 16)
        for width in range(128, max_len + 1, 128):
            q = torch.randn(B, 14, 1, 16)
            window = cache[:, :, :width]
            got = flex_decode_attention(q, window, window, valid_BS[:, :width], 0.25)
            torch.testing.assert_close(
                got, gqa_decode_attention(q, window, window, valid_BS[:, :width], 0.25)
            )
        counts.append(counter.frame_count)
    assert counts[2] <= 3 and counts[4] - counts[2] <= 3, counts
    # a third batch size compiles too: the batch stays static (as flex decoding needs), never symbolic
    assert counts[5] > counts[4], counts


@pytest.mark.parametrize("attention", ["sdpa", "gqa", "flex"])
def test_the_step_mask_gives_what_the_boolean_mask_gives(attention):
    from endo_rl.generation.decode_attention import step_mask

    q, k, v, valid = inputs(3, 14, 2, 9, 8, torch.float64)
    mask = step_mask(valid, attention, torch.float64)
    if attention == "sdpa":  # additive, made once per step: 0 where visible, -inf elsewhere
        assert mask.shape == (3, 1, 1, 9) and mask.dtype == torch.float64
        assert torch.equal(mask[:, 0, 0] == 0, valid) and bool(mask[:, 0, 0][~valid].eq(float("-inf")).all())
    else:  # the boolean mask itself
        assert mask is valid
    got = decode_attention(q, k, v, mask, (14, 2, 8), attention)
    torch.testing.assert_close(got, brute_force_BH1d(q, k, v, valid, 8**-0.5), rtol=1e-10, atol=1e-10)
