"""LoRA-wrapped projections as one effective weight each, and fused projections, for the static decoder.

A PEFT LoRA `Linear` computes `base(x) + sum_a scaling_a * B_a(A_a(dropout(x)))` over its active adapters. While
decoding (no grad, eval mode: no dropout) that is `F.linear(x, W + sum_a scaling_a * B_a @ A_a, bias)`, one
matmul per projection. `LoraMerge` keeps that effective weight in a buffer of its own per wrapped projection,
rewritten in place by `refresh`, so a CUDA graph that reads the buffer's fixed address stays valid across
optimizer steps. Plain nn.Linear projections need no buffer: the decoder reads their parameter itself.

Modules are duck-typed (a `base_layer` nn.Linear, `lora_A`/`lora_B` dicts of nn.Linear, `scaling`, ...), so
the generation layer never imports peft. LoRA variants (DoRA and the like), a bias on B and fan-in-fan-out
weights are not plain `W + s B A` and are not accepted.
"""

from __future__ import annotations

import torch

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def projections(layer: torch.nn.Module) -> dict[str, torch.nn.Module | None]:
    """A decoder layer's seven projections by name (None where one is missing)."""
    out = {n: getattr(layer.self_attn, n, None) for n in ATTENTION_PROJECTIONS}
    out.update({n: getattr(layer.mlp, n, None) for n in MLP_PROJECTIONS})
    return out


def is_lora_linear(module: object) -> bool:
    """A LoRA wrapper (PEFT's `lora.Linear` or alike) around a plain nn.Linear."""
    return (
        type(getattr(module, "base_layer", None)) is torch.nn.Linear
        and isinstance(getattr(module, "lora_A", None), torch.nn.ModuleDict)
        and isinstance(getattr(module, "lora_B", None), torch.nn.ModuleDict)
        and isinstance(getattr(module, "scaling", None), dict)
        and hasattr(module, "active_adapters")
        and hasattr(module, "merged_adapters")
        and hasattr(module, "disable_adapters")
    )


def mergeable(module: object) -> bool:
    """A LoRA wrapper whose every adapter is plain `W + scaling * B @ A` (see the module docstring)."""
    if not is_lora_linear(module) or getattr(module, "fan_in_fan_out", False):
        return False
    for name in module.lora_A:
        if name not in module.lora_B:
            return False
        a, b = module.lora_A[name], module.lora_B[name]
        if type(a) is not torch.nn.Linear or type(b) is not torch.nn.Linear or b.bias is not None:
            return False
        if name in getattr(module, "lora_variant", {}) or getattr(module, "use_dora", {}).get(name, False):
            return False
    return True


def adapter_signs(module) -> list[tuple[str, float]]:
    """(adapter, +1 or -1): what to add to the stored base weight to get the weight the module's forward uses.

    PEFT's forward: adapters disabled -> the unmerged base weight; merged -> the stored weight as it is (it
    already holds the merged adapters); otherwise the base plus each active adapter that this module has.
    """
    if module.disable_adapters:
        return [(name, -1.0) for name in module.merged_adapters]
    if module.merged_adapters:
        return []
    return [(name, 1.0) for name in module.active_adapters if name in module.lora_A]


@torch.no_grad()
def effective_weight_(out: torch.Tensor, module) -> torch.Tensor:
    """Write `module`'s effective weight into `out` in place: W + sum of +-scaling * B @ A, summed in float32
    (or the weight's dtype when wider), cast to `out`'s dtype."""
    weight = module.base_layer.weight
    acc = weight.detach().to(torch.promote_types(weight.dtype, torch.float32), copy=True)
    for name, sign in adapter_signs(module):
        a = module.lora_A[name].weight.detach().to(acc.dtype)
        b = module.lora_B[name].weight.detach().to(acc.dtype)
        acc.addmm_(b, a, alpha=sign * module.scaling[name])
    return out.copy_(acc)


FUSED = {"qkv": ("q_proj", "k_proj", "v_proj")}
"""Projections that read the same input, decoded as one matmul over their weights stacked by rows. Gate and up
are not stacked: at batch 64 each of their GEMMs already streams its weight at the copy bandwidth (one H200, 7B
shape: 2.00 ms of kernels per step stacked vs 1.98 ms apart, `bench/decode_breakdown.py`), and the copy would
cost 7.6 GB at 7B. Q/K/V stacked cost 0.9 GB at 7B."""


def _base(module: torch.nn.Module) -> torch.nn.Linear:
    return module.base_layer if is_lora_linear(module) else module


class LoraMerge:
    """The weights the static decoder reads in place of a model's own, keyed by (layer index, name):

    - each LoRA-wrapped projection's effective weight (key: the projection's name);
    - with `fuse` (default), Q/K/V stacked by rows into one weight (key "qkv"; their biases "qkv_bias"), each
      part the projection's effective weight, so a decode step reads them in one matmul instead of three (at
      batch 64 the separate K and V GEMMs are too small to stream their weights at full bandwidth; see `FUSED`).
      This costs a copy of those weights (0.9 GB at 7B in bf16) and one device copy per `refresh`.

    One instance may serve several decoders of the same model (one copy, however many batch sizes): whoever owns
    it calls `refresh` once per weight update; the decoders read `buffers`.
    """

    def __init__(self, fuse: bool = True) -> None:
        self.fuse = fuse
        self.buffers: dict[tuple[int, str], torch.Tensor] = {}

    def _buffer(self, key: tuple[int, str], like: torch.Tensor, rows: int) -> torch.Tensor:
        """The buffer at `key` of `rows` rows shaped and typed as `like` otherwise, reused when it fits."""
        shape = (rows, *like.shape[1:])
        buf = self.buffers.get(key)
        if buf is None or (buf.shape, buf.dtype, buf.device) != (shape, like.dtype, like.device):
            self.buffers[key] = buf = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def _refresh_stacked(self, i: int, name: str, parts: list[torch.nn.Module]) -> list[tuple[int, str]]:
        """Layer i's `parts` stacked by rows into buffer (i, name), their biases into (i, name_bias) when any has
        one (zeros for those without); returns the keys written."""
        weights = [_base(m).weight for m in parts]
        rows = [w.shape[0] for w in weights]
        stacked = self._buffer((i, name), weights[0], sum(rows))
        for part, out in zip(parts, stacked.split(rows), strict=True):
            if is_lora_linear(part):
                effective_weight_(out, part)
            else:
                out.copy_(part.weight)
        biases = [_base(m).bias for m in parts]
        if all(b is None for b in biases):
            return [(i, name)]
        stacked_bias = self._buffer((i, f"{name}_bias"), weights[0][0], sum(rows))
        for bias, out in zip(biases, stacked_bias.split(rows), strict=True):
            if bias is None:
                out.zero_()
            else:
                out.copy_(bias)
        return [(i, name), (i, f"{name}_bias")]

    @torch.no_grad()
    def refresh(self, model: torch.nn.Module) -> None:
        """Recompute every buffer from the model's current weights, in place where a buffer of its shape exists."""
        seen = set()
        for i, layer in enumerate(model.get_decoder().layers):
            modules = projections(layer)
            fused = [
                n for n, parts in FUSED.items() if self.fuse and all(modules[p] is not None for p in parts)
            ]
            for name in fused:
                seen.update(self._refresh_stacked(i, name, [modules[p] for p in FUSED[name]]))
            covered = {p for name in fused for p in FUSED[name]}
            for name, module in modules.items():
                if name in covered or not is_lora_linear(module):
                    continue
                key, weight = (i, name), module.base_layer.weight
                effective_weight_(self._buffer(key, weight, weight.shape[0]), module)
                seen.add(key)
        for key in set(self.buffers) - seen:  # a projection no longer wrapped: free its copy
            del self.buffers[key]

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers.values())
