"""The RL trainer: a frozen reference supplies endogenous rewards to PPO/GRPO updates of a policy copy.

One step, as `Trainer.train_step` reads:

    prompts   = next prompts_per_step / world prompts, each repeated group_size times
    rollout   = generate with the policy (ZeRO-3: parameters gathered once)
                reference pass: ONE frozen forward -> reference log-probs (KL) + endogenous token rewards
                policy pass (no grad): old log-probs (+ values for PPO)
    rewards   = endogenous (token or sequence level) + correctness + length penalty [- kl_coef * k1]
    advantage = GAE over token rewards (PPO) | group-normalized sequence rewards (GRPO)
    update    = clipped policy loss [+ value loss] [+ kl_coef * k3], micro-batches with gradient accumulation,
                normalized by the step's global token/sequence count, one optimizer step per epoch
    log       = metrics.jsonl + wandb; checkpoint every train.save_every steps

The math is in `algorithms` and `reward_mix`; accelerate/DeepSpeed/peft only in `distributed`; checkpoints in
`checkpoint`; metrics in `run_log`. Use `run(cfg)` or `Trainer(cfg, ...).fit()`.

Shape legend: B sequences on this process, L longest response in the batch.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from endo_rl.core import config_loader, models, templates
from endo_rl.core.config import ExperimentConfig, check_batch_sizes, world_size_from_env
from endo_rl.core.errors import UserError
from endo_rl.generation.sampling import SamplingConfig, generate
from endo_rl.rl import algorithms, checkpoint, distributed, resume, run_lock
from endo_rl.rl import metrics as step_metrics
from endo_rl.rl import rewards as reward_mix
from endo_rl.rl import rollout as rl
from endo_rl.rl import setup as train_setup
from endo_rl.rl.data import Prompt, PromptOrder, load_prompts
from endo_rl.rl.evals import TrainEval
from endo_rl.rl.policy import PolicyModel
from endo_rl.rl.run_log import RunLog


class NonFiniteError(RuntimeError):
    """NaN/Inf in rewards, advantages, loss or gradients with train.on_nonfinite=error."""


class Trainer:
    """PPO/GRPO with endogenous rewards. `lm`, `tokenizer` and `prompts` replace what the config would load."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        lm: torch.nn.Module | None = None,
        tokenizer=None,
        prompts: list[Prompt] | None = None,
    ):
        self.cfg = cfg
        t = cfg.train
        local_sequences = t.prompts_per_step * cfg.algo.group_size // world_size_from_env()
        self.accelerator = distributed.make_accelerator(
            local_sequences // t.micro_batch_size, t.micro_batch_size, t.max_grad_norm
        )
        acc = self.accelerator
        check_batch_sizes(cfg, acc.num_processes)
        self.output_dir = (
            checkpoint.check_output_dir(cfg.output_dir, cfg.resume)
            if acc.is_main_process
            else Path(cfg.output_dir)
        )
        acc.wait_for_everyone()
        distributed.seed_everything(cfg.seed, acc.process_index)
        self.tokenizer = tokenizer or models.load_tokenizer(
            cfg.model.tokenizer or cfg.model.path, cfg.model.gguf_file
        )
        pad = self.tokenizer.pad_token_id
        self.pad_id = self.tokenizer.eos_token_id if pad is None else pad
        self.stop_ids = templates.stop_token_ids(self.tokenizer)
        endo = cfg.reward.endogenous
        if prompts is None:
            need_gold = cfg.reward.correctness.weight > 0
            prompts = load_prompts(cfg.data, self.tokenizer, endo.system_prompt, need_gold)
        if not prompts:
            raise UserError("there are no training prompts")
        self.prompts = prompts
        self.order = PromptOrder(len(self.prompts), cfg.seed)
        with distributed.whole_weights_on_load(acc):
            built = train_setup.build_models(cfg, self.tokenizer, acc.device, lm)
        self.reference_lm, self.reward_lm = built.reference_lm, built.reward_lm
        self._base_copy = built.base_copy
        # on the device before the optimizer exists, so AdamW can use its fused CUDA kernel (no full-size
        # temporaries in the step; accelerate would move it at prepare() anyway)
        built.policy.to(acc.device)
        optimizer, scheduler = train_setup.make_optimizer(cfg, built.policy)
        self.model, self.optimizer, self.scheduler = acc.prepare(built.policy, optimizer, scheduler)
        self.step, self.skipped_steps = 0, 0
        self.timings: dict[str, float] = {}
        self._resume()
        if acc.is_main_process:
            config_loader.save(cfg, self.output_dir / "config.yaml")
        self.log = (
            RunLog(self.output_dir, cfg.logging, config_loader.to_dict(cfg), self.step)
            if acc.is_main_process
            else None
        )
        self.evals = TrainEval(cfg, self.output_dir, self.tokenizer)
        self.grader = None
        if cfg.reward.correctness.weight > 0:
            from endo_rl.evaluation.grading import Grader

            self.grader = Grader()

    # ----- set-up -----------------------------------------------------------------------------------------

    def _resume(self) -> None:
        if not self.cfg.resume:
            return
        path, state = checkpoint.load_latest(self.accelerator, self.cfg.output_dir, self.accelerator.print)
        if path is None:
            self.accelerator.print(
                f"resume=true but {self.cfg.output_dir} has no complete checkpoint: starting at step 0"
            )
            return
        saved = resume.saved_config(state, self.output_dir)
        if saved is not None:  # refuse changes that alter the run's meaning; apply (and print) the safe ones
            for line in resume.check(resume.changes(saved, config_loader.to_dict(self.cfg)), path):
                self.accelerator.print(f"resume: applying the changed {line}")
            train_setup.set_optimizer_settings(self.optimizer, self.scheduler, self.cfg)
        self.step, self.skipped_steps = state["step"], state["skipped_steps"]
        self.order.load_state_dict(state["data"])
        self.accelerator.print(f"resumed from {path} (step {self.step})")

    # ----- the loop ---------------------------------------------------------------------------------------

    def fit(self) -> Path:
        """Train to train.max_steps (evaluating before/after when configured); returns OUTPUT_DIR/final."""
        cfg, acc = self.cfg, self.accelerator
        if cfg.eval.before and self.step == 0:
            self._log(0, self.evals.run("before", self.model, acc))
        bar = tqdm(
            total=cfg.train.max_steps,
            initial=self.step,
            desc="training",
            unit="step",
            disable=not acc.is_main_process,
        )
        with bar:  # closed (ending its line) also when a step raises, so an error message starts a new line
            while self.step < cfg.train.max_steps:
                metrics = self.train_step()
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4g}", reward=f"{metrics['reward/total']:.4g}")
                last = self.step == cfg.train.max_steps
                if self.step % cfg.logging.log_every == 0 or last:
                    self._log(self.step, metrics)
                if (cfg.train.save_every and self.step % cfg.train.save_every == 0) or last:
                    self.save()
        if cfg.eval.after:
            self._log(self.step, self.evals.run("after", self.model, acc))
        final = checkpoint.export_final(
            acc,
            self.model,
            self.output_dir / "final",
            self.tokenizer,
            cfg.lora.save if cfg.lora.enabled else None,
            self._load_base,
        )
        if self.log is not None:
            self.log.close()
        if self.grader is not None:
            self.grader.close()
        if acc.is_main_process:
            run_lock.release(self.output_dir)
        return final

    def train_step(self) -> dict[str, float]:
        """generate -> score -> advantages -> update; returns this step's metrics (same on every process)."""
        start, self.timings = time.perf_counter(), {}
        prompts = self._next_prompts()
        with distributed.gathered_for_generation(self.model, self.accelerator) as policy:
            rollout = self.collect(policy, prompts)
        self.assign_rewards(rollout, prompts)
        self.assign_advantages(rollout)
        if self._nonfinite({"rewards": rollout.rewards_BL, "advantages": rollout.advantages_BL}):
            update = {}
        else:
            with self._timed("update"):
                update = self.update(rollout)
        return self._metrics(rollout, update, time.perf_counter() - start)

    @contextlib.contextmanager
    def _timed(self, phase: str):
        """Wall time of one phase of the step (device synchronized), logged as time/<phase>_s."""
        distributed.synchronize(self.accelerator)
        start = time.perf_counter()
        yield
        distributed.synchronize(self.accelerator)
        self.timings[f"time/{phase}_s"] = time.perf_counter() - start

    def _next_prompts(self) -> list[Prompt]:
        """This process's share of the step's prompts (the global order is the same everywhere)."""
        acc, k = self.accelerator, self.cfg.train.prompts_per_step // self.accelerator.num_processes
        rows = self.order.take(self.cfg.train.prompts_per_step)[
            acc.process_index * k : (acc.process_index + 1) * k
        ]
        return [self.prompts[i] for i in rows for _ in range(self.cfg.algo.group_size)]

    @torch.no_grad()
    def collect(self, policy: PolicyModel, prompts: list[Prompt]) -> rl.Rollout:
        cfg, mbs = self.cfg, self.cfg.train.micro_batch_size
        g = cfg.generation
        prompt_ids = [p.prompt_ids for p in prompts]
        with self._timed("generate"):
            completions = generate(
                policy.lm,
                prompt_ids,
                SamplingConfig(g.max_new_tokens, g.temperature, g.top_p, g.top_k),
                self.stop_ids,
                self.pad_id,
                g.batch_size,
                progress=self.accelerator.is_main_process,
                backend=g.backend,
            )
        response_ids = [c.token_ids for c in completions]
        endo = cfg.reward.endogenous
        with self._timed("reference"), self._reference(policy) as ref_lm:
            ref_logprobs_BL, endogenous_BL = rl.reference_pass(
                ref_lm, prompt_ids, response_ids, self.pad_id, endo.alpha, mbs
            )
            if endo.system_prompt is not None or self.reward_lm is not None:
                # a second forward, for the reward only: another model and/or the reward model's own prompt
                reward_prompt_ids = [p.reward_prompt_ids or p.prompt_ids for p in prompts]
                _, endogenous_BL = rl.reference_pass(
                    self.reward_lm or ref_lm, reward_prompt_ids, response_ids, self.pad_id, endo.alpha, mbs
                )
        rollout = rl.Rollout(
            prompt_ids,
            response_ids,
            torch.tensor([c.truncated for c in completions]),
            rl.response_mask(response_ids),
            ref_logprobs_BL,
            endogenous_BL,
        )
        if self._needs_old_pass():
            with self._timed("old_logprobs"):
                old = rl.policy_pass(
                    policy, self.accelerator.device, prompt_ids, response_ids, self.pad_id, mbs
                )
            rollout.old_logprobs_BL = old["logprobs_BL"]
            rollout.old_values_BL = old.get("values_BL")
        return rollout

    def _reference(self, policy: PolicyModel) -> contextlib.AbstractContextManager:
        if self.reference_lm is not None:
            return contextlib.nullcontext(self.reference_lm)
        return _yield_after(distributed.adapter_disabled(policy.lm), policy.lm)

    def _needs_old_pass(self) -> bool:
        """PPO needs values; several epochs need fixed old log-probs; the k1 reward penalty needs log-probs."""
        a = self.cfg.algo
        return a.name == "ppo" or a.ppo_epochs > 1 or (a.kl_mode == "reward" and a.kl_coef > 0)

    def assign_rewards(self, rollout: rl.Rollout, prompts: list[Prompt]) -> None:
        r, mask = self.cfg.reward, rollout.mask_BL
        extra_B = torch.zeros(mask.shape[0])
        if self.grader is not None:
            texts = self.tokenizer.batch_decode(rollout.response_ids, skip_special_tokens=True)
            rollout.correctness_B = torch.tensor(
                [float(self.grader.grade(p.gold, text).correct) for p, text in zip(prompts, texts)]
            )
            extra_B += r.correctness.weight * rollout.correctness_B
        if r.length_penalty.weight > 0:
            rollout.length_penalty_B = reward_mix.length_penalty(
                mask.sum(-1), self.cfg.generation.max_new_tokens, r.length_penalty.weight
            )
            extra_B += rollout.length_penalty_B
        rewards_BL = reward_mix.token_rewards(
            rollout.endogenous_BL, mask, r.endogenous.weight, r.endogenous.level, extra_B
        )
        a = self.cfg.algo
        if a.kl_mode == "reward" and a.kl_coef > 0:
            kl_BL = algorithms.kl_penalty(rollout.old_logprobs_BL, rollout.ref_logprobs_BL, "k1")
            rewards_BL = rewards_BL - a.kl_coef * torch.where(mask, kl_BL, 0.0)
        rollout.rewards_BL = rewards_BL

    def assign_advantages(self, rollout: rl.Rollout) -> None:
        a, mask = self.cfg.algo, rollout.mask_BL
        if a.name == "ppo":
            adv_BL, rollout.returns_BL = algorithms.gae(
                rollout.rewards_BL, rollout.old_values_BL, mask, a.gamma, a.lam
            )
            if a.whiten_advantages:
                moments = distributed.sum_over_ranks(
                    self.accelerator, algorithms.masked_moments(adv_BL, mask)
                )
                adv_BL = algorithms.whiten(adv_BL, mask, moments)
        else:
            adv_B = algorithms.grpo_advantages(rollout.rewards_BL.sum(-1), a.group_size, a.scale_rewards)
            adv_BL = torch.where(mask, adv_B[:, None], 0.0)
        rollout.advantages_BL = adv_BL

    def update(self, rollout: rl.Rollout) -> dict[str, float]:
        """ppo_epochs optimizer steps over the rollout, each accumulating gradients over micro-batches."""
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
                    losses = self._micro_batch_losses(
                        rollout, rows, denominator, sums, first_epoch=epoch == 0
                    )
                    if self._nonfinite({"loss": losses["loss"]}):
                        skipped = True
                        continue
                    acc.backward(losses["loss"] * scale)
            skipped = self._optimizer_step(sums, skipped)
        n = cfg.algo.ppo_epochs
        stats = {k: v.item() / n for k, v in sums.items() if not k.startswith("first/")}
        stats.update({k.removeprefix("first/"): v.item() for k, v in sums.items() if k.startswith("first/")})
        return stats

    def _micro_batch_losses(
        self, rollout: rl.Rollout, rows: slice, denominator: float, sums: dict, first_epoch: bool
    ) -> dict[str, torch.Tensor]:
        """Forward one micro-batch; add its globally normalized loss terms to `sums` (local values)."""
        a, device = self.cfg.algo, self.accelerator.device
        batch = rl.packed(rollout.prompt_ids, rollout.response_ids, rows, self.pad_id, device)
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
        if a.name == "ppo":
            v_loss, v_clip = algorithms.value_loss(
                out["values_BL"],
                cut(rollout.old_values_BL),
                cut(rollout.returns_BL),
                mask,
                a.value_clip,
                a.loss_agg,
                denominator,
            )
            loss = loss + a.vf_coef * v_loss
            terms.update(value_loss=v_loss, value_clip_fraction=v_clip * mask.sum() / denominator)
        ref_BL = cut(rollout.ref_logprobs_BL)
        if a.kl_mode == "loss":
            kl_loss = algorithms.aggregate(
                algorithms.kl_penalty(logprobs_BL, ref_BL, "k3"), mask, a.loss_agg, denominator
            )
            loss = loss + a.kl_coef * kl_loss
            terms["kl_loss"] = kl_loss
        terms["loss"] = loss
        if first_epoch:  # diagnostics of the policy that sampled the rollout (token sums, divided later)
            terms["first/kl_sum"] = algorithms.masked_sum(
                algorithms.kl_penalty(logprobs_BL.detach(), ref_BL, "k1"), mask
            )
            terms["first/entropy_sum"] = algorithms.masked_sum(out["entropy_BL"], mask)
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + value.detach().double().cpu()
        return terms

    def _optimizer_step(self, sums: dict, skipped: bool) -> bool:
        """Clip, check gradients, step. Returns whether this step was skipped (gradients thrown away)."""
        acc = self.accelerator
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), self.cfg.train.max_grad_norm)
        # DeepSpeed may not report a norm (None): nothing to check then, and the metric is NaN
        known = grad_norm is not None
        grad_norm = torch.as_tensor(grad_norm if known else float("nan"), dtype=torch.float64).cpu()
        if not skipped and known:
            skipped = self._nonfinite({"gradients": grad_norm}, undoable=not distributed.is_deepspeed(acc))
        sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm
        if not skipped:
            self.optimizer.step()
            self._check_weights("after the optimizer step")
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return skipped

    def _nonfinite(self, tensors: dict[str, torch.Tensor], undoable: bool = True) -> bool:
        """True (on every process) when any tensor holds NaN/Inf and on_nonfinite=skip; raises for error."""
        bad = [name for name, x in tensors.items() if x is not None and not torch.isfinite(x).all()]
        if not distributed.any_rank(self.accelerator, bool(bad)):
            return False
        where = ", ".join(bad) or "another process's values"
        if self.cfg.train.on_nonfinite == "error" or not undoable:
            raise NonFiniteError(
                f"non-finite values (NaN/Inf) in {where} at step {self.step + 1}; "
                + (
                    "set train.on_nonfinite=skip to skip such steps"
                    if undoable
                    else "under DeepSpeed the step cannot be undone"
                )
            )
        self.skipped_steps += 1
        self.accelerator.print(
            f"step {self.step + 1}: non-finite {where}; step skipped ({self.skipped_steps} so far)"
        )
        return True

    def _check_weights(self, when: str) -> None:
        """NaN/Inf in the policy's weights (a finite gradient times a huge lr, say) stop the run: no undo."""
        bad = checkpoint.nonfinite_parameters(self.model)
        if distributed.any_rank(self.accelerator, bool(bad)):
            raise NonFiniteError(
                f"non-finite values (NaN/Inf) in the weights {when} at step {self.step + 1} "
                f"({', '.join(bad) or 'on another process'}; train.lr={self.cfg.train.lr}, "
                f"train.max_grad_norm={self.cfg.train.max_grad_norm}); not checkpointed"
            )

    # ----- metrics, checkpoints ---------------------------------------------------------------------------

    def _metrics(self, rollout: rl.Rollout, update: dict[str, float], seconds: float) -> dict[str, float]:
        def reduce(x: torch.Tensor) -> torch.Tensor:
            return distributed.sum_over_ranks(self.accelerator, x)

        metrics, n_tokens = step_metrics.rollout_metrics(rollout, self._kl_penalty_B(rollout), reduce)
        metrics.update(step_metrics.update_metrics(update, n_tokens, self.accelerator.num_processes, reduce))
        metrics.update(
            lr=self.scheduler.get_last_lr()[0],
            tokens_per_s=n_tokens / seconds,
            step_time_s=seconds,
            skipped_steps=float(self.skipped_steps),
            **self.timings,
        )
        return metrics

    def _kl_penalty_B(self, rollout: rl.Rollout) -> torch.Tensor:
        """What assign_rewards subtracted for KL, per sequence (added back for the task reward metric)."""
        a = self.cfg.algo
        if not (a.kl_mode == "reward" and a.kl_coef > 0):
            return torch.zeros(rollout.mask_BL.shape[0])
        kl_BL = algorithms.kl_penalty(rollout.old_logprobs_BL, rollout.ref_logprobs_BL, "k1")
        return a.kl_coef * torch.where(rollout.mask_BL, kl_BL, 0.0).sum(-1)

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        if self.log is not None and metrics:
            self.log.log(step, metrics)

    def save(self) -> Path:
        self._check_weights("before saving")  # a NaN/Inf weight is never checkpointed
        state = {
            "skipped_steps": self.skipped_steps,
            "data": self.order.state_dict(),
            "config": config_loader.to_dict(self.cfg),
        }
        return checkpoint.save(self.accelerator, self.output_dir, self.step, state, self.cfg.train.keep_last)

    def _load_base(self) -> torch.nn.Module:
        return train_setup.load_base(self.cfg, self._base_copy)


@contextlib.contextmanager
def _yield_after(ctx: contextlib.AbstractContextManager, value):
    with ctx:
        yield value


def run(cfg: ExperimentConfig, lm=None, tokenizer=None, prompts=None) -> Path:
    """Train from a config; returns OUTPUT_DIR/final. output_dir is unlocked however the run ends."""
    try:
        return Trainer(cfg, lm=lm, tokenizer=tokenizer, prompts=prompts).fit()
    finally:
        run_lock.release(cfg.output_dir)
