"""NaN/Inf checks of a training step: stop with a message naming what went bad, or skip the step and count it.

The decision is taken on every process together (`any_rank`), so all processes skip the same steps.
"""

from __future__ import annotations

import torch

from endo_rl.rl import distributed


class NonFiniteError(RuntimeError):
    """NaN/Inf in rewards, advantages, loss or gradients with train.on_nonfinite=error."""


class NonFiniteGuard:
    def __init__(self, accelerator, on_nonfinite: str, skipped_steps: int = 0):
        self.accelerator, self.on_nonfinite, self.skipped_steps = accelerator, on_nonfinite, skipped_steps

    def check_weights(self, model: torch.nn.Module, when: str) -> None:
        """Raise when any weight is NaN/Inf (a finite gradient times a huge or NaN lr, say): whatever
        train.on_nonfinite says, since the optimizer step cannot be undone, and such weights are never saved."""
        bad = nonfinite_parameters(model)
        if distributed.any_rank(self.accelerator, bool(bad)):
            raise NonFiniteError(
                f"non-finite values (NaN/Inf) in the weights {when} ({', '.join(bad) or 'on another process'}); "
                "not checkpointed: lower train.lr or train.max_grad_norm"
            )

    def bad(self, tensors: dict[str, torch.Tensor | None], step: int, undoable: bool = True) -> bool:
        """True (on every process) when any tensor holds NaN/Inf and on_nonfinite=skip; raises for error.

        `step` is the 1-based number of the step being computed; `undoable=False` (a DeepSpeed step that has
        already changed the weights) always raises.
        """
        bad = [name for name, x in tensors.items() if x is not None and not torch.isfinite(x).all()]
        if not distributed.any_rank(self.accelerator, bool(bad)):
            return False
        where = ", ".join(bad) or "another process's values"
        if self.on_nonfinite == "error" or not undoable:
            raise NonFiniteError(
                f"non-finite values (NaN/Inf) in {where} at step {step}; "
                + (
                    "set train.on_nonfinite=skip to skip such steps"
                    if undoable
                    else "under DeepSpeed the step cannot be undone"
                )
            )
        self.skipped_steps += 1
        self.accelerator.print(f"step {step}: non-finite {where}; step skipped ({self.skipped_steps} so far)")
        return True


def nonfinite_parameters(model: torch.nn.Module, limit: int = 3) -> list[str]:
    """Names of (up to `limit`) parameters holding NaN/Inf on this process (ZeRO-3: its own shard).

    One host sync in all, not one per parameter: each tensor's largest |value| (a NaN anywhere makes it NaN, an
    Inf makes it Inf) is computed on its device, and the maxima are read back together.
    """
    named = [(name, getattr(p, "ds_tensor", p)) for name, p in model.named_parameters()]
    named = [(name, t) for name, t in named if t.numel()]
    if not named:
        return []
    device = named[0][1].device
    maxima = torch.stack(
        [torch.linalg.vector_norm(t.detach(), float("inf")).to(device, torch.float32) for _, t in named]
    )
    finite = torch.isfinite(maxima).tolist()
    return [name for (name, _), ok in zip(named, finite, strict=True) if not ok][:limit]
