"""The policy update of one step: `algo.ppo_epochs` optimizer steps over a rollout, in micro-batches.

    loss = clipped policy loss [+ vf_coef * value loss (estimators with a critic)] [+ kl_coef * k3 (kl_mode=loss)]

Each loss is normalized by the step's global token count (token_mean) or sequence count (seq_mean), so the
gradient does not depend on the micro-batch size or the number of processes (see `algorithms.aggregate`).
NaN/Inf in a loss or the gradients is handled by the `NonFiniteGuard` (stop, or skip the step).

Shape legend: B sequences on this process, L longest response.
"""

from __future__ import annotations

import torch

from endo_rl.core.config import ExperimentConfig
from endo_rl.rl import algorithms, distributed
from endo_rl.rl import rollout as rl
from endo_rl.rl.nonfinite import NonFiniteGuard


class PolicyUpdate:
    """Holds what the update changes (model, optimizer, scheduler); call it once per step."""

    def __init__(self, cfg: ExperimentConfig, accelerator, model, optimizer, scheduler, critic: bool):
        self.cfg, self.accelerator, self.critic = cfg, accelerator, critic
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def __call__(
        self, rollout: rl.Rollout, pad_id: int, guard: NonFiniteGuard, step: int
    ) -> dict[str, float]:
        """ppo_epochs optimizer steps over the rollout, each accumulating gradients over micro-batches.

        Returns the loss terms and diagnostics (means over epochs; first-epoch diagnostics as they are).
        """
        cfg, acc = self.cfg, self.accelerator
        mask = rollout.mask_BL
        tokens = distributed.sum_over_ranks(acc, mask.sum().double()).item()
        denominator = (
            tokens if cfg.algo.loss_agg == "token_mean" else cfg.train.prompts_per_step * cfg.algo.group_size
        )
        # accelerate divides each loss by the accumulation steps and DDP/DeepSpeed average over processes:
        # undo both, so the gradient is that of the globally normalized loss
        scale = acc.num_processes * acc.gradient_accumulation_steps
        sums: dict[str, torch.Tensor] = {}
        skipped = False
        for epoch in range(cfg.algo.ppo_epochs):
            for rows in rl.micro_batches(mask.shape[0], cfg.train.micro_batch_size):
                with acc.accumulate(self.model):
                    if skipped:
                        continue
                    batch = rl.packed(rollout.prompt_ids, rollout.response_ids, rows, pad_id, acc.device)
                    losses = self.losses(rollout, rows, batch, denominator)
                    _accumulate(sums, losses, first_epoch=epoch == 0)
                    if guard.bad({"loss": losses["loss"]}, step):
                        skipped = True
                        continue
                    acc.backward(losses["loss"] * scale)
            skipped = self._optimizer_step(sums, skipped, guard, step)
        n = cfg.algo.ppo_epochs
        stats = {k: v.item() / n for k, v in sums.items() if not k.startswith("first/")}
        stats.update({k.removeprefix("first/"): v.item() for k, v in sums.items() if k.startswith("first/")})
        return stats

    def losses(self, rollout: rl.Rollout, rows: slice, batch, denominator: float) -> dict[str, torch.Tensor]:
        """Forward one micro-batch -> its globally normalized loss terms (and first-epoch diagnostics)."""
        a, device = self.cfg.algo, self.accelerator.device
        out = self.model(**vars(batch))
        mask, width = batch.response_mask_BL, batch.response_mask_BL.shape[1]

        def cut(x_BL: torch.Tensor) -> torch.Tensor:
            return x_BL[rows, :width].to(device)

        logprobs_BL = out["logprobs_BL"]
        old_BL = cut(rollout.old_logprobs_BL) if rollout.old_logprobs_BL is not None else logprobs_BL.detach()
        pg_loss, clip_frac = algorithms.policy_loss(
            logprobs_BL, old_BL, cut(rollout.advantages_BL), mask, a.clip_eps, a.loss_agg, denominator
        )
        terms = {"policy_loss": pg_loss, "clip_fraction": clip_frac * mask.sum() / denominator}
        loss = pg_loss
        if self.critic:
            v_loss, v_clip = algorithms.value_loss(
                out["values_BL"],
                cut(rollout.old_values_BL),
                cut(rollout.returns_BL),
                mask,
                a.ppo.value_clip,
                a.loss_agg,
                denominator,
            )
            loss = loss + a.ppo.vf_coef * v_loss
            terms.update(value_loss=v_loss, value_clip_fraction=v_clip * mask.sum() / denominator)
        ref_BL = cut(rollout.ref_logprobs_BL)
        if a.kl_mode == "loss":
            kl_loss = algorithms.aggregate(
                algorithms.kl_penalty(logprobs_BL, ref_BL, "k3"), mask, a.loss_agg, denominator
            )
            loss = loss + a.kl_coef * kl_loss
            terms["kl_loss"] = kl_loss
        terms["loss"] = loss
        # diagnostics of the policy that sampled the rollout (token sums, divided later; first epoch only)
        terms["first/kl_sum"] = algorithms.masked_sum(
            algorithms.kl_penalty(logprobs_BL.detach(), ref_BL, "k1"), mask
        )
        terms["first/entropy_sum"] = algorithms.masked_sum(out["entropy_BL"], mask)
        return terms

    def _optimizer_step(self, sums: dict, skipped: bool, guard: NonFiniteGuard, step: int) -> bool:
        """Clip, check gradients, step. Returns whether this step was skipped (gradients thrown away)."""
        acc = self.accelerator
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), self.cfg.train.max_grad_norm)
        # DeepSpeed may not report a norm (None): nothing to check then, and the metric is NaN
        known = grad_norm is not None
        grad_norm = torch.as_tensor(grad_norm if known else float("nan"), dtype=torch.float64).cpu()
        if not skipped and known:
            skipped = guard.bad({"gradients": grad_norm}, step, undoable=not distributed.is_deepspeed(acc))
        sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm
        if not skipped:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return skipped


def _accumulate(sums: dict, terms: dict[str, torch.Tensor], first_epoch: bool) -> None:
    """Add a micro-batch's terms to the step's sums (first-epoch diagnostics only in the first epoch)."""
    for key, value in terms.items():
        if first_epoch or not key.startswith("first/"):
            sums[key] = sums.get(key, 0.0) + value.detach().double().cpu()
