"""The policy update of one step: `algo.ppo_epochs` passes over a rollout, one optimizer step per mini-batch.

    loss = clipped policy loss [+ vf_coef * value loss (estimators with a critic)] [+ kl_coef * k3 (kl_mode=loss)]

The rollout is split in order into mini-batches of `train.mini_batch_size` sequences (all processes together;
None: the whole rollout), each one optimizer step accumulated over micro-batches. The rollout-time log-probs stay
fixed across mini-batches and epochs, so from the second step on the ratio leaves 1 and the clip binds (PPO as in
verl and OpenRLHF; with one step per rollout it is plain policy gradient). Each mini-batch's loss is normalized by
that mini-batch's global token count (token_mean) or sequence count (seq_mean) over the loss mask, so its
gradient does not depend on the micro-batch size or the number of processes (see `algorithms.aggregate`).
NaN/Inf in a loss or the gradients is handled by the `NonFiniteGuard` (stop, or skip the rest of the step;
optimizer steps already taken stay).

Shape legend: B sequences on this process, L longest response.
"""

from __future__ import annotations

import torch

from endo_rl.core.config import ExperimentConfig
from endo_rl.core.varlen import varlen_attention
from endo_rl.rl import algorithms, distributed
from endo_rl.rl import rollout as rl
from endo_rl.rl.nonfinite import NonFiniteGuard


def local_mini_batch(cfg: ExperimentConfig, world_size: int) -> int:
    """Sequences per optimizer step on one process (the whole local rollout when train.mini_batch_size is None)."""
    t = cfg.train
    return (t.mini_batch_size or t.prompts_per_step * cfg.algo.group_size) // world_size


def loss_temperature(cfg: ExperimentConfig) -> float:
    """The T of softmax(z / T) in the policy's log-probs and the KL: the sampling temperature (1 if greedy)."""
    t = cfg.generation.temperature
    return t if t > 0 else 1.0


class PolicyUpdate:
    """Holds what the update changes (model, optimizer, scheduler); call it once per step."""

    def __init__(self, cfg: ExperimentConfig, accelerator, model, optimizer, scheduler, critic: bool):
        self.cfg, self.accelerator, self.critic = cfg, accelerator, critic
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.local_mini = local_mini_batch(cfg, accelerator.num_processes)

    @property
    def mini_batches_per_epoch(self) -> int:
        t = self.cfg.train
        return (
            t.prompts_per_step * self.cfg.algo.group_size // self.accelerator.num_processes // self.local_mini
        )

    def __call__(
        self, rollout: rl.Rollout, pad_id: int, guard: NonFiniteGuard, step: int
    ) -> dict[str, float]:
        """ppo_epochs x mini-batches optimizer steps over the rollout, each accumulating over micro-batches.

        Returns the loss terms and clip fractions as means over the optimizer steps taken (first-pass
        diagnostics as they are); {} when no response is in the loss (all truncated under truncation=mask).
        With `train.pack_sequences` the whole update, every backward included (gradient checkpointing
        recomputes the attention there), runs under the varlen attention.
        """
        with varlen_attention(self.model, self.cfg.train.pack_sequences):
            return self._update(rollout, pad_id, guard, step)

    def _update(self, rollout: rl.Rollout, pad_id: int, guard: NonFiniteGuard, step: int) -> dict[str, float]:
        cfg, acc = self.cfg, self.accelerator
        n = rollout.mask_BL.shape[0]
        minis = [slice(i, min(i + self.local_mini, n)) for i in range(0, n, self.local_mini)]
        counts = self._global_counts(rollout.loss_mask_BL, minis)
        # accelerate divides each loss by the accumulation steps and DDP/DeepSpeed average over processes:
        # undo both, so the gradient is that of the mini-batch's globally normalized loss
        scale = acc.num_processes * acc.gradient_accumulation_steps
        sums: dict[str, torch.Tensor] = {}
        skipped, n_steps = False, 0
        lengths = rl.sequence_lengths(rollout.prompt_ids, rollout.response_ids)
        for epoch in range(cfg.algo.ppo_epochs):
            for mini, (tokens, sequences) in zip(minis, counts, strict=True):
                if tokens == 0:  # every response of this mini-batch is out of the loss (on every process)
                    continue
                denominator = tokens if cfg.algo.loss_agg == "token_mean" else sequences
                mini_rows = list(range(mini.start, mini.stop))
                # micro-batches grouped by length inside the mini-batch: little compute on padding
                for group in rl.micro_batches([lengths[i] for i in mini_rows], cfg.train.micro_batch_size):
                    rows = [mini_rows[i] for i in group]
                    with acc.accumulate(self.model):
                        if skipped:
                            continue
                        ids = (rollout.prompt_ids, rollout.response_ids)
                        batch = rl.packed(*ids, rows, pad_id, acc.device, cfg.train.pack_sequences)
                        losses = self.losses(rollout, rows, batch, denominator, tokens)
                        _accumulate(sums, losses, first_pass=epoch == 0)
                        if guard.bad({"loss": losses["loss"]}, step):
                            skipped = True
                            continue
                        acc.backward(losses["loss"] * scale)
                skipped = self._optimizer_step(sums, skipped, guard, step)
                n_steps += 1
        if n_steps == 0:
            acc.print(f"step {step}: every response was truncated and algo.truncation=mask: no update")
        stats = {k: v.item() / n_steps for k, v in sums.items() if not k.startswith("first/")}
        stats.update({k.removeprefix("first/"): v.item() for k, v in sums.items() if k.startswith("first/")})
        return stats

    def _global_counts(self, loss_mask_BL: torch.Tensor, minis: list[slice]) -> list[tuple[float, float]]:
        """(tokens, sequences) in the loss per mini-batch, summed over processes (one all-reduce)."""
        local = [[float(loss_mask_BL[m].sum()), float(loss_mask_BL[m].any(-1).sum())] for m in minis]
        total = distributed.sum_over_ranks(self.accelerator, torch.tensor(local, dtype=torch.float64))
        return [(float(t), float(s)) for t, s in total.tolist()]

    def losses(
        self, rollout: rl.Rollout, rows: list[int], batch, denominator: float, tokens: float
    ) -> dict[str, torch.Tensor]:
        """Forward one micro-batch -> its loss terms normalized by its mini-batch's global `denominator`, and
        clip fractions as shares of the mini-batch's global loss `tokens` (whatever `loss_agg` is)."""
        a, device, t = self.cfg.algo, self.accelerator.device, loss_temperature(self.cfg)
        out = self.model(**vars(batch), temperature=t)
        width = batch.response_mask_BL.shape[1]

        def cut(x_BL: torch.Tensor) -> torch.Tensor:
            return x_BL[rows, :width].to(device)

        mask = cut(rollout.loss_mask_BL)
        logprobs_BL = out["logprobs_BL"]
        old_BL = cut(rollout.old_logprobs_BL) if rollout.old_logprobs_BL is not None else logprobs_BL.detach()
        pg_loss, clipped = algorithms.policy_loss(
            logprobs_BL, old_BL, cut(rollout.advantages_BL), mask, a.clip_eps, a.loss_agg, denominator
        )
        terms = {"policy_loss": pg_loss, "clip_fraction": clipped / tokens}
        loss = pg_loss
        if self.critic:
            v_loss, v_clipped = algorithms.value_loss(
                out["values_BL"],
                cut(rollout.old_values_BL),
                cut(rollout.returns_BL),
                mask,
                a.ppo.value_clip,
                a.loss_agg,
                denominator,
            )
            loss = loss + a.ppo.vf_coef * v_loss
            terms.update(value_loss=v_loss, value_clip_fraction=v_clipped / tokens)
        ref_BL = cut(rollout.ref_logprobs_BL)
        if a.kl_mode == "loss":
            kl_loss = algorithms.aggregate(
                algorithms.kl_penalty(logprobs_BL, ref_BL, "k3"), mask, a.loss_agg, denominator
            )
            loss = loss + a.kl_coef * kl_loss
            terms["kl_loss"] = kl_loss
        terms["loss"] = loss
        if rollout.old_logprobs_BL is None:
            # one optimizer step on exactly the sampling policy: its diagnostics come from this forward (token
            # sums over all response tokens, divided later); otherwise the metrics read the rollout-time pass
            full = batch.response_mask_BL
            k1_BL = algorithms.kl_penalty(logprobs_BL.detach(), ref_BL, "k1")
            terms["first/kl_sum"] = algorithms.masked_sum(k1_BL, full)
            terms["first/entropy_sum"] = algorithms.masked_sum(out["entropy_BL"], full)
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
            guard.check_weights(self.model, f"after the optimizer step of step {step}")
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return skipped


def _accumulate(sums: dict, terms: dict[str, torch.Tensor], first_pass: bool) -> None:
    """Add a micro-batch's terms to the step's sums (first-pass diagnostics only in the first epoch)."""
    for key, value in terms.items():
        if first_pass or not key.startswith("first/"):
            sums[key] = sums.get(key, 0.0) + value.detach().double().cpu()
