"""Fast decoding for Llama/Qwen2-style decoders: a preallocated KV cache and one CUDA graph per decode step.

HF `generate` with its dynamic cache spends most of a decode step in Python and small kernel launches
(about 20 ms per token at 7B on an H200 against a 3.5 ms weight-read floor). Here the decode step has fixed
shapes (batch, one token, the whole cache length), so on CUDA it is captured once as a CUDA graph and replayed:
one launch per token. The next token is sampled inside the same graph (`categorical`: multinomial's draw
without its per-token device sync). The prefill runs the model's own modules; a decode step reads the model's
weights directly (norms, projections, MLP, rotary tables, LM head), with our attention over the static cache and
our cache writes.

Fused projections (default): a decode step reads Q/K/V as one stacked weight, one GEMM instead of three (at
batch 64 the separate K and V GEMMs are too small to stream their weights at full bandwidth). The stacked copy
lives in a buffer (`lora_merge.LoraMerge`) that `sync_weights` rewrites in place after each weight update, so
captured graphs stay valid.

LoRA: a projection wrapped in a PEFT LoRA layer is decoded with its effective weight W + scaling * B @ A
(base weight alone while adapters are disabled), kept in the same kind of buffer (inside the stacked one when
fused), rewritten in place by `sync_weights` as the adapter trains. The prefill runs the wrapped modules
themselves.

Prompts are left-padded; cache slot s holds the token at padded column s. A key is visible when it is not
padding and not in the future, kept in `key_valid_BS`, which the graph reads from a fixed buffer.

Finished rows are dropped (`compact`): a step of an RL rollout lasts as long as its longest response, while most
rows stopped long before (with response lengths spread like real ones, half the rows are done within about the
mean length). Every row would otherwise keep paying attention over its whole window and sampling over the whole
vocabulary. When at most half the rows still generate, `generate_rows` moves the live rows to the front of the
cache, and from then on the step runs on those rows only, from a CUDA graph captured for that many rows
(batch sizes halve, down to `min_rows`, so the shapes come from a small fixed set).

Shape legend: B batch, R rows still decoded (after `compact`), S cache length (prompt width + max new tokens),
P prompt width, H heads, K KV heads, d head dim, D hidden, V vocab.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from endo_rl.core.batch import left_pad
from endo_rl.generation.decode_attention import check_attention, distinct_rows, step_mask
from endo_rl.generation.decode_layer import (
    compiled_layer_fns,
    decode_layer,
    layer_weights,
    post_attention,
    pre_attention,
    rotate_half,
)
from endo_rl.generation.lora_merge import LoraMerge, mergeable, projections

SUPPORTED = ("llama", "qwen2", "mistral")


def supports(model: torch.nn.Module) -> bool:
    """Plain pre-norm SiLU decoders without per-head q/k norms, sliding windows or logit soft-capping, whose
    projections are plain nn.Linear or plain LoRA wrappers of one (`lora_merge.mergeable`: decoded with the
    adapter merged in); any other wrapper is refused."""
    cfg = model.config
    if not (
        cfg.model_type in SUPPORTED
        and cfg.hidden_act == "silu"
        and not getattr(cfg, "use_sliding_window", False)
        and getattr(cfg, "final_logit_softcapping", None) is None
    ):
        return False
    return all(
        type(m) is torch.nn.Linear or mergeable(m)
        for layer in model.get_decoder().layers
        for m in projections(layer).values()
    )


def capture_cuda_graph(fn, warmup: int = 2, pool=None) -> tuple[torch.cuda.CUDAGraph, object]:
    """`fn()` captured as a CUDA graph after `warmup` runs on a side stream (as capture requires; compiled code
    compiles there); returns the graph and what `fn` returned inside it (tensors the replays rewrite).
    `pool`: a memory pool shared with other graphs (`torch.cuda.graph_pool_handle()`), see `StaticDecoder`."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        out = fn()
    return graph, out


def _pointers(model: torch.nn.Module) -> tuple[int, ...]:
    return tuple(p.data_ptr() for p in model.parameters())


class StaticDecoder:
    """Prefill + decode with a static KV cache of `batch_size` rows and `max_len` slots, reusable across calls.

    A decode step attends only to the cache prefix in use, rounded up to `window` slots: reading the whole
    cache at every step would add the full cache's bytes to every step's weight read. Each window (and number
    of decoded rows, `compact`) has its own CUDA graph, captured on first use and replayed afterwards. An
    optimizer step updates weights in place, so the graphs stay valid; `sync_weights` re-binds the weights and drops the graphs only when the parameters
    moved to new storage (e.g. ZeRO-3 gathering them anew).

    `compile`: False (eager), True (inductor on CUDA, eager elsewhere) or a torch.compile backend.
    `lora`: the merged LoRA weights and fused projections (see the module docstring) shared with other decoders
    of the same model; its owner refreshes it. By default the decoder owns one (fused projections unless
    `fuse=False`) and refreshes it in `sync_weights`.
    `attention`: the decode step's attention, "sdpa" (default), "gqa" or "flex" (see `decode_attention`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        batch_size: int,
        max_len: int,
        use_cuda_graph: bool = True,
        compile: bool | str | object = True,
        window: int = 128,
        lora: LoraMerge | None = None,
        attention: str = "sdpa",
        fuse: bool = True,
    ):
        check_attention(attention)
        cfg = model.config
        self.attention = attention
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.batch_size, self.max_len, self.window = batch_size, max_len, window
        shape = (len(model.get_decoder().layers), batch_size, self.n_kv, max_len, self.head_dim)
        self.k_cache = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v_cache = torch.zeros_like(self.k_cache)
        self.key_valid_BS = torch.zeros(batch_size, max_len, dtype=torch.bool, device=self.device)
        # fixed input/output buffers of the decode step (what a CUDA graph reads and writes)
        self.token_B1 = torch.zeros(batch_size, 1, dtype=torch.long, device=self.device)
        self.position_B1 = torch.zeros_like(self.token_B1)
        self.slot_1 = torch.zeros(1, dtype=torch.long, device=self.device)
        self.next_slot = 0  # host copy of slot_1: picks the window without a device sync
        self.rows = batch_size
        """The rows a decode step runs: the first `rows` of every buffer (fewer after `compact`)."""
        self.use_cuda_graph = use_cuda_graph and self.device.type == "cuda"
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        """Per (rows, window width, sampling): the captured decode step and the buffer it writes (logits, or
        the sampled tokens)."""
        self.graph_pool = torch.cuda.graph_pool_handle() if self.use_cuda_graph else None
        """One memory pool for all the graphs: one's intermediates may reuse another's memory, so a graph per
        (rows, width) costs little. Safe here because the graphs never run concurrently and a replay's logits
        (or tokens) are read before the next replay (of this or another graph) may overwrite them."""
        self.dims = (self.n_heads, self.n_kv, self.head_dim)
        self.eps = cfg.rms_norm_eps
        if compile is True:  # by default compiled only on CUDA, where kernel count is what a step is short of
            compile = "inductor" if self.device.type == "cuda" else False
        self.layer_fns = compiled_layer_fns(compile) if compile else (pre_attention, post_attention)
        self._bound: tuple[int, ...] | None = None
        self.lora, self._owns_lora = (LoraMerge(fuse) if lora is None else lora), lora is None
        self.dedup_prefill = True  # prefill each distinct prompt once (GRPO repeats each group_size times)
        self.sync_weights(model)

    @torch.no_grad()
    def sync_weights(self, model: torch.nn.Module) -> None:
        """Bind to `model`'s current weights, detached: decoding never builds an autograd graph. LoRA-wrapped
        projections: their merged buffers are rewritten in place (by the owner of a shared `lora`)."""
        self.model, self.backbone = model, model.get_decoder()
        if self._owns_lora:
            self.lora.refresh(model)
        merged: dict[int, dict[str, torch.Tensor]] = {}
        for (i, name), buf in self.lora.buffers.items():
            merged.setdefault(i, {})[name] = buf
        self.weights = [layer_weights(layer, merged.get(i)) for i, layer in enumerate(self.backbone.layers)]
        # a reallocated merged buffer moves what a captured graph reads, as a moved parameter does
        pointers = _pointers(model) + tuple(b.data_ptr() for b in self.lora.buffers.values())
        if self._bound != pointers:
            self.graphs.clear()
            self._bound = pointers

    def _attention(self, layer, x_BTD, cos, sin, P: int, mask_B1TS, copies) -> torch.Tensor:
        """Prefill attention over the prompt columns [0, P), writing them to the cache (row r's to the rows
        `copies` maps to r, when the prefill ran on distinct rows only)."""
        attn, (B, T, _) = layer.self_attn, x_BTD.shape
        q = attn.q_proj(x_BTD).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(x_BTD).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x_BTD).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        idx = attn.layer_idx
        self.k_cache[idx, :, :, :P], self.v_cache[idx, :, :, :P] = (
            (k, v) if copies is None else (k[copies], v[copies])
        )
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask_B1TS, scale=attn.scaling, enable_gqa=self.n_kv != self.n_heads
        )
        return attn.o_proj(out.transpose(1, 2).reshape(B, T, -1))

    @torch.no_grad()
    def prefill(self, input_ids_BP: torch.Tensor, attention_mask_BP: torch.Tensor) -> torch.Tensor:
        """Run the left-padded prompts, fill cache columns [0, P); returns next-token logits [B, V].

        With `dedup_prefill` (default) a prompt that occurs in several rows is run once and its cache columns
        and logits copied to the other rows."""
        B, P = input_ids_BP.shape
        if self.batch_size != B or self.max_len <= P:
            raise ValueError(
                f"prefill of {B} x {P} tokens in a decoder of {self.batch_size} x {self.max_len}"
            )
        valid = attention_mask_BP.bool()
        self.rows = B
        self.key_valid_BS.zero_()
        self.key_valid_BS[:, :P] = valid
        position_BP = (attention_mask_BP.long().cumsum(-1) - 1).clamp(min=0)
        self.position_B1.copy_(position_BP[:, -1:] + 1)
        self.slot_1.fill_(P)
        self.next_slot = P
        dedup = distinct_rows(input_ids_BP, attention_mask_BP) if self.dedup_prefill else None
        rows, copies = (slice(None), None) if dedup is None else dedup
        valid, position_BP = valid[rows], position_BP[rows]
        causal_PP = torch.ones(P, P, dtype=torch.bool, device=self.device).tril()
        # a padded query row would see no key at all (NaN in SDPA): let it see itself
        mask_B1PP = ((causal_PP & valid[:, None, :]) | torch.eye(P, dtype=torch.bool, device=self.device))[
            :, None
        ]
        x = self.backbone.embed_tokens(input_ids_BP[rows])
        cos, sin = self.backbone.rotary_emb(x, position_BP)
        for layer in self.backbone.layers:
            x = x + self._attention(layer, layer.input_layernorm(x), cos, sin, P, mask_B1PP, copies)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        logits = self.model.get_output_embeddings()(self.backbone.norm(x[:, -1])).float()
        return logits if copies is None else logits[copies]

    def _decode_step(self, rows: int, width: int, sampling: tuple | None = None) -> torch.Tensor:
        """One token for each of the first `rows` rows, attending to cache slots [0, width): the next-token
        logits [rows, V], or with `sampling` = (temperature, top_p, top_k) the next tokens [rows] (`sample`)."""
        valid_RS = self.key_valid_BS[:rows]
        valid_RS.index_fill_(1, self.slot_1, True)
        mask = step_mask(valid_RS[:, :width], self.attention, self.dtype)  # once for every layer
        rest = (self.slot_1, mask, self.dims, self.eps, self.attention)
        x = self.backbone.embed_tokens(self.token_B1[:rows])
        cos, sin = self.backbone.rotary_emb(x, self.position_B1[:rows])
        for i, w in enumerate(self.weights):
            k, v = self.k_cache[i, :rows, :, :width], self.v_cache[i, :rows, :, :width]
            x = decode_layer(self.layer_fns, x, w, k, v, cos, sin, *rest)
        logits_RV = self.model.get_output_embeddings()(self.backbone.norm(x[:, -1])).float()
        return logits_RV if sampling is None else sample(logits_RV, *sampling)

    def _capture(
        self, rows: int, width: int, sampling: tuple | None
    ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        saved = [t.clone() for t in (self.key_valid_BS, self.slot_1, self.position_B1)]
        graph, out = capture_cuda_graph(
            lambda: self._decode_step(rows, width, sampling), pool=self.graph_pool
        )
        for buf, value in zip((self.key_valid_BS, self.slot_1, self.position_B1), saved, strict=True):
            buf.copy_(value)
        return graph, out

    @torch.no_grad()
    def decode(self, token_R: torch.Tensor, sampling: tuple | None = None) -> torch.Tensor:
        """Feed one token to each decoded row at the next cache slot; returns next-token logits [R, V], or with
        `sampling` = (temperature, top_p, top_k) the sampled next tokens [R], drawn inside the same CUDA graph
        (one replay per token, no device sync)."""
        if self.next_slot >= self.max_len:
            raise ValueError(f"the decoder's cache of {self.max_len} slots is full")
        if token_R.shape != (self.rows,):
            raise ValueError(
                f"decode takes one token per decoded row ({self.rows}), got {tuple(token_R.shape)}"
            )
        width = min(self.max_len, -(-(self.next_slot + 1) // self.window) * self.window)
        self.token_B1[: self.rows].copy_(token_R[:, None])
        if self.use_cuda_graph:
            key = (self.rows, width, sampling)
            if key not in self.graphs:
                self.graphs[key] = self._capture(*key)
            graph, out = self.graphs[key]
            graph.replay()
        else:
            out = self._decode_step(self.rows, width, sampling)
        self.position_B1 += 1
        self.slot_1 += 1
        self.next_slot += 1
        return out

    @torch.no_grad()
    def compact(self, keep_R: torch.Tensor) -> None:
        """Decode only rows `keep_R` from now on, in that order: their cache columns so far, key visibility and
        positions move to rows [0, R). The rows' values are unchanged: the attention of one row never reads
        another's, and each row's keys, positions and mask move with it."""
        rows, used = keep_R.shape[0], self.next_slot
        if not 0 < rows <= self.rows:
            raise ValueError(f"compact to {rows} of the {self.rows} decoded rows")
        for cache in (self.k_cache, self.v_cache):
            # one layer at a time: the gathered copy is one layer's, not the whole cache's
            for layer_cache in cache:
                layer_cache[:rows, :, :used] = layer_cache[keep_R, :, :used]
        for buf in (self.key_valid_BS, self.position_B1):
            buf[:rows] = buf[keep_R]
        self.rows = rows


def sample(logits_BV: torch.Tensor, temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """Greedy at temperature 0; otherwise temperature, then top-k, then nucleus (top-p) sampling."""
    if temperature == 0:
        return logits_BV.argmax(-1)
    logits_BV = logits_BV / temperature
    if top_k > 0:
        kth = logits_BV.topk(min(top_k, logits_BV.shape[-1]), dim=-1).values[:, -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth, float("-inf"))
    if top_p < 1.0:
        sorted_BV, order_BV = logits_BV.sort(dim=-1, descending=True)
        cumulative = sorted_BV.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_BV.softmax(-1) > top_p  # keep the smallest prefix reaching top_p
        logits_BV = logits_BV.scatter(-1, order_BV, sorted_BV.masked_fill(drop, float("-inf")))
    return categorical(logits_BV.softmax(-1))


def categorical(probs_BV: torch.Tensor) -> torch.Tensor:
    """One draw per row from `probs_BV`: argmax(p / q), q ~ Exp(1) (the Gumbel-max trick in exponential form).

    This is what `torch.multinomial(p, 1)` computes (its one-sample path), and with the same generator state it
    draws the same tokens, but without multinomial's validity check: that check reads the probabilities' min
    and max back to the host, a device sync at every token, and it cannot be captured in a CUDA graph. Here the
    sampling runs inside the decode step's graph. (CUDA's exponential never returns 0; the same caveat as
    multinomial's applies on CPUs, where a 0 has probability about 2^-53 in float64.)"""
    q_BV = torch.empty_like(probs_BV).exponential_(1)
    return (probs_BV / q_BV).argmax(-1)


def compacted_rows(live: int, rows: int, min_rows: int) -> int:
    """The rows to decode `live` unfinished rows with, now decoding `rows`: the smallest of rows / 2, rows / 4,
    ... (not below `min_rows`) that holds them; `rows` when none is smaller (`min_rows` 0: never compact)."""
    target = rows
    while min_rows and target // 2 >= max(live, min_rows):
        target //= 2
    return target


@torch.no_grad()
def generate_rows(
    decoder: StaticDecoder,
    prompt_ids: Sequence[Sequence[int]],
    sampling,
    stop_ids: Sequence[int],
    pad_id: int,
    width: int | None = None,
    min_rows: int = 0,
) -> list[list[int]]:
    """Prefill one micro-batch and decode until every row stopped or `sampling.max_new_tokens`.

    A micro-batch smaller than the decoder's batch is filled with copies of its first prompt (dropped after),
    and prompts are left-padded to `width` columns (default: the longest), so the shapes the decoder sees come
    from a small fixed set. `min_rows` > 0: finished rows are dropped (`StaticDecoder.compact`) whenever the
    unfinished ones fit in half the decoded rows, down to `min_rows` rows; 0 decodes every row to the end.
    """
    n, B = len(prompt_ids), decoder.batch_size
    prompts = list(prompt_ids) + [prompt_ids[0]] * (B - n)
    ids, mask = left_pad(prompts, pad_id)
    if width is not None and width > ids.shape[1]:
        ids = F.pad(ids, (width - ids.shape[1], 0), value=pad_id)
        mask = F.pad(mask, (width - mask.shape[1], 0), value=0)
    logits = decoder.prefill(ids.to(decoder.device), mask.to(decoder.device))
    params = (sampling.temperature, sampling.top_p, sampling.top_k)
    next_R = sample(logits, *params)
    stop = torch.tensor(list(stop_ids), device=decoder.device)
    origin_R = torch.arange(B, device=decoder.device)  # the micro-batch row each decoded row is
    done_R = origin_R >= n  # the filler copies count as finished
    max_new = sampling.max_new_tokens
    out = torch.full((B, max_new), pad_id, dtype=torch.long, device=decoder.device)
    for t in range(max_new):
        token_R = next_R.masked_fill(done_R, pad_id)  # a copy: the next replay rewrites next_R's buffer
        out[origin_R, t] = token_R
        done_R |= torch.isin(token_R, stop)
        if t % 16 == 15:  # a host sync every 16 tokens, not every token
            live = int((~done_R).sum())
            if live == 0:
                break
            rows = compacted_rows(live, decoder.rows, min_rows)
            if rows < decoder.rows:  # the live rows first, then finished ones to fill the batch size
                keep_R = done_R.to(torch.uint8).argsort(stable=True)[:rows]
                decoder.compact(keep_R)
                origin_R, done_R, token_R = origin_R[keep_R], done_R[keep_R], token_R[keep_R]
        if t + 1 < max_new:
            next_R = decoder.decode(token_R, params)  # the step and the sampling in one graph replay
    return out[:n].tolist()
