"""LoRA-wrapped projections as one effective weight each, for the static decoder.

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


class LoraMerge:
    """The effective weights of a model's LoRA-wrapped projections, keyed by (layer index, projection name).

    One instance may serve several decoders of the same model (one copy of the merged weights, however many
    batch sizes): whoever owns it calls `refresh` once per weight update; the decoders read `buffers`.
    """

    def __init__(self) -> None:
        self.buffers: dict[tuple[int, str], torch.Tensor] = {}

    @torch.no_grad()
    def refresh(self, model: torch.nn.Module) -> None:
        """Recompute every wrapped projection's effective weight, in place where a buffer of its shape exists."""
        seen = set()
        for i, layer in enumerate(model.get_decoder().layers):
            for name, module in projections(layer).items():
                if not is_lora_linear(module):
                    continue
                key, weight = (i, name), module.base_layer.weight
                buf = self.buffers.get(key)
                if buf is None or (buf.shape, buf.dtype, buf.device) != (
                    weight.shape,
                    weight.dtype,
                    weight.device,
                ):
                    self.buffers[key] = buf = torch.empty_like(weight, requires_grad=False)
                effective_weight_(buf, module)
                seen.add(key)
        for key in set(self.buffers) - seen:  # a projection no longer wrapped: free its copy
            del self.buffers[key]

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers.values())
