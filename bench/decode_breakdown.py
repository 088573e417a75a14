"""Where one decode step's time goes at batch 64: the whole step and its parts, each replayed from its own CUDA graph.

The decode step of `endo_rl.generation.static` is one CUDA-graph replay per token. Its bound is the weight read
(every layer's projections and the LM head, once per token). This splits the step into parts that are timed
alone, each captured as its own graph and replayed (median of 30 replays, ms):

- `step_ms[W]`: the decoder's whole step (fused projections, the default; `step_unfused_ms`: at the largest
  window without them) (embedding, every layer, final norm, LM head) at a window of W cache slots;
- `matmuls_ms`: the seven projections of every layer and the LM head, `F.linear` on fixed inputs, nothing else:
  how close the GEMMs at M = 64 rows come to the weight read;
- `matmuls_fused_ms`: the same with Q/K/V and gate/up each one GEMM over concatenated weights (5 per layer);
- `attention_ms[W]`: every layer's two cache writes and its decode attention over W slots;
- `attention_variants_ms`: one layer's attention alone, four ways (`attention_variants`), times the layer count,
  at the middle window, with each variant's largest difference from the decoder's "sdpa";
- `layers_no_attention_ms`: every layer's two compiled halves with a fixed attention output (norms,
  projections, rotary, SiLU, residuals: the step without attention, embedding and LM head);
- `step_sampled_ms`: the whole step at the largest window with the next token sampled inside it, as
  `generate_rows` runs it (temperature 1);
- `outside_graph_ms`: the per-token work left outside the graph (masking finished rows, storing the token,
  the stop check, feeding the decoder), eager, per token, host and device together;
- `step_hooked_ms`: the whole step at the largest window with the benchmark's stop-token hook on the LM head
  (every other part runs without it);
- `kernels`: torch.profiler over replays of the step's graph, kernel time per step by category;
- `by_rows`: per number of decoded rows (64, 32, 16, 8: after finished rows are dropped), the whole step at
  two windows (and with sampling at the largest), the stacked GEMMs alone, the work outside the graph and the
  kernel time by category.

On a CPU (a check of the script only) every part runs eagerly and no bound is computed.
Used by `realistic_step.py --parts decode_parts`.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

import torch
import torch.nn.functional as F
from grpo_step import copy_bandwidth, timed  # bench/ is on sys.path (realistic_step.py, the only caller)
from profile_step import category

BATCH = 64
ROWS = (64, 32, 16, 8)
"""The decoded row counts `by_rows` times: the halvings of 64 down to generation.compact_min_rows' default."""


def part_ms(fn, device: str, replays: int = 30) -> float:
    """Median ms of `fn`: replayed from a CUDA graph on CUDA, called eagerly elsewhere."""
    from endo_rl.generation.static import capture_cuda_graph

    run = capture_cuda_graph(fn, warmup=2)[0].replay if device == "cuda" else fn
    return 1e3 * statistics.median(timed(run, device, repeat=replays if device == "cuda" else 3, warmup=2))


def weight_bytes(weights, head: torch.Tensor) -> int:
    """Bytes one decode step must read: every layer's tensors and the LM head's weight."""
    return head.numel() * head.element_size() + sum(
        t.numel() * t.element_size() for w in weights for t in w if t is not None
    )


def matmul_chain(weights, head: torch.Tensor, fused: bool, rows: int = BATCH):
    """The projections of every layer and the LM head on fixed [rows, 1, *] inputs, nothing between them.
    `fused`: Q/K/V and gate/up as one GEMM each, over weights concatenated here (extra memory)."""
    w0 = weights[0]
    x = torch.randn(rows, 1, w0.wq.shape[1], device=head.device, dtype=head.dtype)
    xi = torch.randn(rows, 1, w0.wd.shape[1], device=head.device, dtype=head.dtype)
    if fused:
        mats = [(torch.cat([w.wq, w.wk, w.wv]), w.wo, torch.cat([w.wg, w.wu]), w.wd) for w in weights]
    else:
        mats = [(w.wq, w.wk, w.wv, w.wo, w.wg, w.wu, w.wd) for w in weights]

    def run():
        for layer in mats:
            for m in layer[:-1]:
                F.linear(x, m)
            F.linear(xi, layer[-1])
        F.linear(x[:, -1], head)

    return run


def step_kernels(fn, device: str, replays: int = 5) -> dict:
    """Kernel time per step by category (ms) and the top kernels, from torch.profiler over graph replays."""
    from endo_rl.generation.static import capture_cuda_graph

    run = capture_cuda_graph(fn, warmup=2)[0].replay if device == "cuda" else fn
    run()
    activities = [torch.profiler.ProfilerActivity.CPU]
    kind = torch.autograd.DeviceType.CPU
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        kind = torch.autograd.DeviceType.CUDA
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(replays):
            run()
        if device == "cuda":
            torch.cuda.synchronize()
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for e in prof.events():
        if e.device_type == kind:
            us = (
                e.time_range.elapsed_us() if kind == torch.autograd.DeviceType.CUDA else e.self_cpu_time_total
            )
            seconds[e.name] += us / 1e3 / replays
            counts[e.name] += 1
    by_category: dict[str, float] = defaultdict(float)
    for name, ms in seconds.items():
        by_category[category(name)] += ms
    top = sorted(seconds.items(), key=lambda kv: -kv[1])[:12]
    return {
        "kernels_per_step": sum(counts.values()) / replays,
        "kernel_ms_per_step": sum(seconds.values()),
        "by_category_ms": dict(sorted(by_category.items(), key=lambda kv: -kv[1])),
        "top": [[round(ms, 4), counts[n] / replays, category(n), n[:120]] for n, ms in top],
    }


def outside_graph_loop(decoder, device: str, rows: int = BATCH):
    """One token's work left outside the graph, as `generate_rows` does it for `rows` decoded rows: finished
    rows' tokens masked, the tokens stored, the stop check, the tokens fed to the decoder (sampling itself
    runs inside the step's graph, `step_sampled_ms`)."""
    next_token = torch.randint(0, decoder.model.config.vocab_size, (rows,), device=device)
    stop = torch.tensor([0], device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    origin = torch.arange(rows, device=device)
    out = torch.zeros(BATCH, 8, dtype=torch.long, device=device)

    def run():
        token = next_token.masked_fill(done, 0)
        out[origin, 3] = token
        done.logical_or_(torch.isin(token, stop))
        decoder.token_B1[:rows].copy_(token[:, None])
        decoder.position_B1.add_(0)  # as `decode`'s position += 1, without moving it
        decoder.slot_1.add_(0)

    return run


def attention_variants(q, k, v, valid_BS, scale: float) -> dict:
    """One layer's decode attention written four ways (all [B, H, 1, d]): SDPA with the boolean mask and
    enable_gqa (the decoder's "sdpa"); with an additive float mask made once per step, not per layer; and each
    with the G query heads of a KV head as G query rows of that head, K and V read once per KV head."""
    B, H, _, d = q.shape
    K = k.shape[1]
    bias = torch.zeros(valid_BS.shape, dtype=q.dtype, device=q.device).masked_fill(~valid_BS, float("-inf"))
    masks = {"bool": valid_BS[:, None, None, :], "bias": bias[:, None, None, :]}
    q_grouped = q.reshape(B, K, H // K, d)

    def sdpa(mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=K != H)

    def grouped(mask):
        return F.scaled_dot_product_attention(q_grouped, k, v, attn_mask=mask, scale=scale).reshape(
            B, H, 1, d
        )

    out = {f"sdpa_{m}": (lambda m=m: sdpa(masks[m])) for m in masks}
    out.update({f"grouped_{m}": (lambda m=m: grouped(masks[m])) for m in masks})
    return out


def by_rows(decoder, weights, head: torch.Tensor, windows: list[int], device: str) -> dict:
    """Per number of decoded rows (what the decoder runs after dropping finished rows, `StaticDecoder.compact`):
    the whole step at the smallest and largest window (and with sampling inside it at the largest), the stacked
    GEMMs alone, the per-token work outside the graph, and the step's kernel time by category at the largest
    window."""

    def step(rows: int, width: int, sampling: tuple | None = None):
        decoder.slot_1.fill_(width - 1)  # the new token's slot inside the window, as in decoding
        return lambda: decoder._decode_step(rows, width, sampling)

    out = {}
    for rows in ROWS:
        part = {f"step_ms_{w}": part_ms(step(rows, w), device) for w in (windows[0], windows[-1])}
        chain = matmul_chain(weights, head, fused=True, rows=rows)
        part["matmuls_fused_ms"] = part_ms(chain, device)
        del chain
        outside = outside_graph_loop(decoder, device, rows)
        part["outside_graph_ms"] = 1e3 * statistics.median(timed(outside, device, repeat=30, warmup=3))
        part["step_sampled_ms"] = part_ms(step(rows, windows[-1], (1.0, 1.0, 0)), device)
        kernels = step_kernels(step(rows, windows[-1]), device)
        part["kernel_ms_by_category"] = kernels["by_category_ms"]
        part["kernels_per_step"] = kernels["kernels_per_step"]
        out[rows] = part
    return out


def breakdown(model, prompts: list[list[int]], pad_id: int, max_new: int, device: str, hook=None) -> dict:
    """The parts above for `model` decoding `prompts` (64 of them) with room for `max_new` tokens; with `hook`
    (a forward hook for the LM head), also the whole step at the largest window with it (`step_hooked_ms`)."""
    from endo_rl.core.batch import left_pad
    from endo_rl.generation.decode_attention import decode_attention
    from endo_rl.generation.decode_layer import layer_weights
    from endo_rl.generation.static import StaticDecoder

    ids, mask = left_pad(prompts[:BATCH], pad_id)
    P = ids.shape[1]
    decoder = StaticDecoder(model, BATCH, max_len=P + max_new, use_cuda_graph=False)
    decoder.prefill(ids.to(device), mask.to(device))
    weights, head = decoder.weights, model.get_output_embeddings().weight  # fused: Q/K/V and gate/up stacked
    windows = sorted({w for w in (256, 768, 1280) if w <= decoder.max_len} | {decoder.max_len})
    out: dict = {"batch": BATCH, "prompt_width": P, "windows": windows}
    step, attention = {}, {}
    n_heads, n_kv, head_dim = decoder.dims
    q = torch.randn(BATCH, n_heads, 1, head_dim, device=device, dtype=head.dtype)
    kv_new = torch.randn(BATCH, n_kv, 1, head_dim, device=device, dtype=head.dtype)
    for width in windows:
        decoder.key_valid_BS[:, :width] = True
        decoder.slot_1.fill_(width - 1)
        step[width] = part_ms(lambda width=width: decoder._decode_step(BATCH, width), device)

        def attend(width=width):
            for i in range(len(weights)):
                k, v = decoder.k_cache[i, :, :, :width], decoder.v_cache[i, :, :, :width]
                k.index_copy_(2, decoder.slot_1, kv_new)
                v.index_copy_(2, decoder.slot_1, kv_new)
                decode_attention(q, k, v, decoder.key_valid_BS[:, :width], decoder.dims, decoder.attention)

        attention[width] = part_ms(attend, device)
    out["step_ms"], out["attention_ms"] = step, attention
    width = windows[len(windows) // 2]
    k, v = decoder.k_cache[0, :, :, :width], decoder.v_cache[0, :, :, :width]
    variants = attention_variants(q, k, v, decoder.key_valid_BS[:, :width], head_dim**-0.5)
    want = variants["sdpa_bool"]().float()
    out["attention_variants_window"] = width
    out["attention_variants_ms"], out["attention_variants_max_diff"] = {}, {}
    for name, fn in variants.items():  # one layer, times the layer count: a per-step figure
        out["attention_variants_ms"][name] = len(weights) * part_ms(fn, device)
        out["attention_variants_max_diff"][name] = (fn().float() - want).abs().max().item()
    out["kernels"] = step_kernels(lambda: decoder._decode_step(BATCH, windows[-1]), device)
    out["kernels"]["window"] = windows[-1]
    separate = [layer_weights(layer) for layer in model.get_decoder().layers]  # the model's own, unfused
    out["matmuls_ms"] = part_ms(matmul_chain(separate, head, fused=False), device)
    fused = matmul_chain(separate, head, fused=True)
    out["matmuls_fused_ms"] = part_ms(fused, device)
    del fused
    pre, post = decoder.layer_fns
    x0 = torch.randn(BATCH, 1, head.shape[1], device=device, dtype=head.dtype)
    cos, sin = decoder.backbone.rotary_emb(x0, decoder.position_B1)
    attn_out = torch.randn(BATCH, n_heads, 1, head_dim, device=device, dtype=head.dtype)

    def no_attention():
        x = x0
        for w in weights:
            pre(x, w, cos, sin, decoder.dims, decoder.eps)
            x = post(x, attn_out, w, decoder.eps)

    out["layers_no_attention_ms"] = part_ms(no_attention, device)
    outside = outside_graph_loop(decoder, device)
    out["outside_graph_ms"] = 1e3 * statistics.median(timed(outside, device, repeat=30, warmup=3))
    decoder.slot_1.fill_(windows[-1] - 1)
    out["step_sampled_ms"] = part_ms(lambda: decoder._decode_step(BATCH, windows[-1], (1.0, 1.0, 0)), device)
    out["by_rows"] = by_rows(decoder, separate, head, windows, device)
    if hook is not None:
        handle = model.get_output_embeddings().register_forward_hook(hook)
        out["step_hooked_ms"] = part_ms(lambda: decoder._decode_step(BATCH, windows[-1]), device)
        handle.remove()
    plain = StaticDecoder(model, BATCH, max_len=P + max_new, use_cuda_graph=False, fuse=False)
    plain.prefill(ids.to(device), mask.to(device))
    plain.key_valid_BS[:, : windows[-1]] = True
    plain.slot_1.fill_(windows[-1] - 1)
    out["step_unfused_ms"] = part_ms(lambda: plain._decode_step(BATCH, windows[-1]), device)
    out["weight_bytes"] = weight_bytes(separate, head)
    if device == "cuda":
        out["copy_bytes_per_s"] = copy_bandwidth(device)
        out["bound_ms"] = 1e3 * out["weight_bytes"] / out["copy_bytes_per_s"]
    return out
