"""The RL trainer: a frozen reference supplies endogenous rewards to PPO/GRPO updates of a policy copy.

One step, as `Trainer.train_step` reads:

    prompts    = next prompts_per_step / world prompts, each repeated group_size times
    rollout    = generate with the policy (ZeRO-3: parameters gathered once)
                 reference pass: ONE frozen forward -> reference log-probs (KL) + endogenous token rewards
                 policy pass (no grad): old log-probs (+ values with a critic)
    score      = `rewards.compose_rewards`: endogenous + correctness + length penalty [- kl_coef * k1]
    advantages = `advantages.ESTIMATORS[algo.name]`: GAE over token rewards (ppo) | group-normalized (grpo)
    update     = `update.PolicyUpdate`: clipped policy loss [+ value loss] [+ kl_coef * k3], micro-batches with
                 gradient accumulation, normalized by the step's global token/sequence count
    log        = metrics.jsonl + wandb; checkpoint every train.save_every steps

The math is in `algorithms` and `rewards`; accelerate/DeepSpeed/peft only in `distributed`; checkpoints in
`checkpoint`; metrics in `metrics` and `run_log`. Use `run(cfg)` or `Trainer(cfg, ...).fit()`.

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
from endo_rl.generation.generator import Generator, make_generator
from endo_rl.rl import advantages, checkpoint, distributed, resume, rewards, run_lock, truncation
from endo_rl.rl import metrics as step_metrics
from endo_rl.rl import rollout as rl
from endo_rl.rl import setup as train_setup
from endo_rl.rl.data import Prompt, PromptOrder, load_prompts, process_share
from endo_rl.rl.evals import PeriodicEval, TrainEval
from endo_rl.rl.nonfinite import NonFiniteError, NonFiniteGuard
from endo_rl.rl.policy import without_cudnn_attention
from endo_rl.rl.run_log import RunLog
from endo_rl.rl.update import PolicyUpdate, local_mini_batch, loss_temperature

__all__ = ["NonFiniteError", "Trainer", "run"]


class Trainer:
    """PPO/GRPO with endogenous rewards. `lm`, `tokenizer` and `prompts` replace what the config would load;
    `periodic_eval(policy_lm, tokenizer) -> metrics` replaces the math evaluator for `eval.every`."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        lm: torch.nn.Module | None = None,
        tokenizer=None,
        prompts: list[Prompt] | None = None,
        periodic_eval: PeriodicEval | None = None,
    ):
        self.cfg, t = cfg, cfg.train
        self.estimator = advantages.estimator(cfg.algo.name)
        self.reward_weights = train_setup.reward_weights(cfg)
        self.truncation = truncation.resolve(cfg.algo.truncation, self.estimator.critic)
        self.accelerator = acc = distributed.make_accelerator(
            local_mini_batch(cfg, world_size_from_env()) // t.micro_batch_size,
            t.micro_batch_size,
            t.max_grad_norm,
        )
        check_batch_sizes(cfg, acc.num_processes)
        self.output_dir = Path(cfg.output_dir)
        if acc.is_main_process:  # created, checked and locked by the main process only
            self.output_dir = checkpoint.check_output_dir(cfg.output_dir, cfg.resume)
        acc.wait_for_everyone()
        distributed.seed_everything(cfg.seed, acc.process_index, cfg.deterministic)
        self.tokenizer = tokenizer or models.load_tokenizer(
            cfg.model.tokenizer or cfg.model.path, cfg.model.gguf_file
        )
        self.pad_id = templates.pad_token_id(self.tokenizer)
        self.stop_ids = templates.stop_token_ids(self.tokenizer)
        self.prompts = prompts if prompts is not None else self._load_prompts()
        if not self.prompts:
            raise UserError("there are no training prompts")
        self.order = PromptOrder(len(self.prompts), cfg.seed)
        self._build_models(lm)
        self.step, self.guard = 0, NonFiniteGuard(acc, t.on_nonfinite)
        self.timings: dict[str, float] = {}
        self.generator: Generator | None = None
        """The rollout engine, made at the first step and kept (compiled graphs, KV caches) across steps."""
        self._resume()
        if acc.is_main_process:
            config_loader.save(cfg, self.output_dir / "config.yaml")
        self.log = (
            RunLog(self.output_dir, cfg.logging, config_loader.to_dict(cfg), self.step)
            if acc.is_main_process
            else None
        )
        self.evals = TrainEval(cfg, self.output_dir, self.tokenizer, periodic_eval)
        self.grader = None
        if cfg.reward.correctness.weight > 0:
            from endo_rl.evaluation.grading import Grader

            self.grader = Grader()

    # ----- set-up -----------------------------------------------------------------------------------------

    def _load_prompts(self) -> list[Prompt]:
        cfg = self.cfg
        need_gold = cfg.reward.correctness.weight > 0
        return load_prompts(cfg.data, self.tokenizer, cfg.reward.endogenous.system_prompt, need_gold)

    def _build_models(self, lm: torch.nn.Module | None) -> None:
        acc = self.accelerator
        with distributed.whole_weights_on_load(acc):
            built = train_setup.build_models(self.cfg, self.tokenizer, acc, lm, self.estimator.critic)
        self.reference_lm, self.reward_lm = built.reference_lm, built.reward_lm
        self._base_copy = built.base_copy
        # on the device before the optimizer exists, so AdamW can use its fused CUDA kernel (no full-size
        # temporaries in the step; accelerate would move it at prepare() anyway)
        built.policy.to(acc.device)
        optimizer, scheduler = train_setup.make_optimizer(self.cfg, built.policy)
        self.model, self.optimizer, self.scheduler = acc.prepare(built.policy, optimizer, scheduler)
        self.update = PolicyUpdate(
            self.cfg, acc, self.model, self.optimizer, self.scheduler, critic=self.estimator.critic
        )

    def _resume(self) -> None:
        if not self.cfg.resume:
            return
        acc = self.accelerator
        path, state = checkpoint.newest_intact(self.cfg.output_dir, acc.process_index, acc.print)
        if path is None:
            acc.print(f"resume=true but {self.cfg.output_dir} has no complete checkpoint: starting at step 0")
            return
        # changes that alter the run's meaning are refused before anything is loaded; safe ones are applied
        saved = resume.saved_config(state, self.output_dir)
        applied = resume.check(resume.changes(saved, config_loader.to_dict(self.cfg)), path) if saved else []
        checkpoint.load(acc, path)
        for line in applied:
            acc.print(f"resume: applying the changed {line}")
        train_setup.set_optimizer_settings(self.optimizer, self.scheduler, self.cfg)
        self.step, self.guard.skipped_steps = state["step"], state["skipped_steps"]
        self.order.load_state_dict(state["data"])
        self.accelerator.print(f"resumed from {path} (step {self.step})")

    @property
    def skipped_steps(self) -> int:
        """Steps skipped for NaN/Inf so far (train.on_nonfinite=skip)."""
        return self.guard.skipped_steps

    # ----- the loop ---------------------------------------------------------------------------------------

    def fit(self) -> Path:
        """Train to train.max_steps (evaluating before, every eval.every steps and after, as configured);
        returns OUTPUT_DIR/final."""
        cfg, acc = self.cfg, self.accelerator
        if cfg.eval.before and self.step == 0:
            self._log(0, self.evals.run("before", self.model, acc, step=0))
        if self.evals.due(0) and self.step == 0:
            self._log(0, self.evals.periodic(0, self.model, acc))
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
                if self.evals.due(self.step):
                    metrics.update(self.evals.periodic(self.step, self.model, acc))
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4g}", reward=f"{metrics['reward/total']:.4g}")
                last = self.step == cfg.train.max_steps
                if self.step % cfg.logging.log_every == 0 or last:
                    self._log(self.step, metrics)
                if (cfg.train.save_every and self.step % cfg.train.save_every == 0) or last:
                    self.save()
        if cfg.eval.after:
            self._log(self.step, self.evals.run("after", self.model, acc, self.step))
        return self._finish()

    def train_step(self) -> dict[str, float]:
        """generate -> score -> advantages -> update; returns this step's metrics (same on every process)."""
        start, self.timings = time.perf_counter(), {}
        prompts = self._next_prompts()
        with distributed.gathered_for_generation(self.model, self.accelerator) as policy:
            rollout = self.collect(policy, prompts)
        self.score(rollout, prompts)
        self.assign_advantages(rollout)
        update = {}
        if not self.guard.bad(
            {"rewards": rollout.rewards_BL, "advantages": rollout.advantages_BL}, self.step + 1
        ):
            with self._timed("update"), without_cudnn_attention():
                update = self.update(rollout, self.pad_id, self.guard, self.step + 1)
        return self._metrics(rollout, update, time.perf_counter() - start)

    @contextlib.contextmanager
    def _timed(self, phase: str):
        """Wall time of one phase (device synchronized) as time/<phase>_s; a profiler range phase/<phase>."""
        distributed.synchronize(self.accelerator)
        start = time.perf_counter()
        with torch.profiler.record_function(f"phase/{phase}"):
            yield
            distributed.synchronize(self.accelerator)
        self.timings[f"time/{phase}_s"] = time.perf_counter() - start

    def _next_prompts(self) -> list[Prompt]:
        """This process's share of the step's prompts (the global order is the same everywhere)."""
        t, g, acc = self.cfg.train, self.cfg.algo.group_size, self.accelerator
        per_mini = t.mini_batch_size // g if t.mini_batch_size and t.mini_batch_size % g == 0 else None
        step_rows = self.order.take(t.prompts_per_step)
        rows = process_share(step_rows, acc.num_processes, acc.process_index, per_mini)
        return [self.prompts[i] for i in rows for _ in range(g)]

    @torch.no_grad()
    def collect(self, policy, prompts: list[Prompt]) -> rl.Rollout:
        """Sample responses, then the no-grad passes: reference (KL, endogenous rewards) and old policy."""
        g = self.cfg.generation
        prompt_ids = [p.prompt_ids for p in prompts]
        with self._timed("generate"):
            if self.generator is None:
                self.generator = make_generator(
                    policy.lm, g.backend, g.batch_size, g.decode_attention, g.compact_min_rows
                )
            # the weights this step's optimizer left (or that ZeRO-3 gathered)
            self.generator.sync_weights(policy.lm)
            # g is a SamplingConfig: max_new_tokens, temperature, top_p, top_k
            progress = self.accelerator.is_main_process
            completions = self.generator.generate(
                prompt_ids, g, self.stop_ids, self.pad_id, progress=progress
            )
        response_ids = [c.token_ids for c in completions]
        truncated_B = torch.tensor([c.truncated for c in completions])
        with self._timed("reference"), without_cudnn_attention(), self._reference(policy) as ref_lm:
            ref_logprobs_BL, endogenous_BL = self._reference_pass(ref_lm, prompts, response_ids, truncated_B)
        mask_BL = rl.response_mask(response_ids)
        rollout = rl.Rollout(prompt_ids, response_ids, truncated_B, mask_BL, ref_logprobs_BL, endogenous_BL)
        rollout.loss_mask_BL = truncation.loss_mask(mask_BL, truncated_B, self.truncation)
        if self._needs_old_pass():
            with self._timed("old_logprobs"), without_cudnn_attention():
                old = rl.policy_pass(
                    policy,
                    self.accelerator.device,
                    prompt_ids,
                    response_ids,
                    self.pad_id,
                    temperature=loss_temperature(self.cfg),
                    **rl.pass_options(self.cfg),
                )
            rollout.old_logprobs_BL, rollout.old_entropy_BL = old["logprobs_BL"], old["entropy_BL"]
            rollout.old_values_BL = old.get("values_BL")
            if self.truncation == "bootstrap":
                rollout.old_final_values_B = torch.where(truncated_B, old["final_values_B"], 0.0)
        return rollout

    def _reference_pass(
        self,
        ref_lm: torch.nn.Module,
        prompts: list[Prompt],
        response_ids: list[list[int]],
        truncated_B: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(reference log-probs on the policy's prompt at the sampling temperature, endogenous token rewards on
        the raw logits; truncated responses bootstrap logsumexp(z_{H+1}) under truncation=bootstrap)."""
        endo, prompt_ids = self.cfg.reward.endogenous, [p.prompt_ids for p in prompts]
        bootstrap_B = truncated_B if self.truncation == "bootstrap" else None
        kwargs = {"bootstrap_B": bootstrap_B, **rl.pass_options(self.cfg)}
        ref_logprobs_BL, endogenous_BL = rl.reference_pass(
            ref_lm,
            prompt_ids,
            response_ids,
            self.pad_id,
            endo.alpha,
            temperature=loss_temperature(self.cfg),
            **kwargs,
        )
        if endo.system_prompt is not None or self.reward_lm is not None:
            # a second forward, for the reward only: another model and/or the reward model's own prompt
            reward_prompt_ids = [p.reward_prompt_ids or p.prompt_ids for p in prompts]
            _, endogenous_BL = rl.reference_pass(
                self.reward_lm or ref_lm, reward_prompt_ids, response_ids, self.pad_id, endo.alpha, **kwargs
            )
        return ref_logprobs_BL, endogenous_BL

    def _reference(self, policy) -> contextlib.AbstractContextManager:
        if self.reference_lm is not None:
            return contextlib.nullcontext(self.reference_lm)
        return _yield_after(distributed.adapter_disabled(policy.lm), policy.lm)

    def _needs_old_pass(self) -> bool:
        """A critic needs values; several optimizer steps per rollout (epochs, mini-batches) need the rollout-time
        log-probs held fixed; the k1 reward penalty needs log-probs."""
        steps = self.cfg.algo.ppo_epochs * self.update.mini_batches_per_epoch
        return self.estimator.critic or steps > 1 or self.reward_weights.kl_coef > 0

    def score(self, rollout: rl.Rollout, prompts: list[Prompt]) -> None:
        """Grade the responses (when correctness counts), then compose the token rewards and their parts."""
        correct_B = None
        if self.grader is not None:
            texts = self.tokenizer.batch_decode(rollout.response_ids, skip_special_tokens=True)
            correct_B = torch.tensor(
                [float(self.grader.grade(p.gold, t).correct) for p, t in zip(prompts, texts)]
            )
        rollout.rewards_BL, rollout.reward_parts_B = rewards.compose_rewards(
            self.reward_weights,
            rollout.mask_BL,
            rollout.endogenous_BL,
            correct_B,
            rollout.old_logprobs_BL,
            rollout.ref_logprobs_BL,
        )

    def assign_advantages(self, rollout: rl.Rollout) -> None:
        """Advantages (and returns, with a critic) from the estimator of `algo.name`."""

        def reduce(x: torch.Tensor) -> torch.Tensor:
            return distributed.sum_over_ranks(self.accelerator, x)

        rollout.advantages_BL, rollout.returns_BL = self.estimator.advantages(
            rollout.rewards_BL,
            rollout.old_values_BL,
            rollout.loss_mask_BL,
            self.cfg.algo,
            reduce,
            rollout.old_final_values_B,
        )

    # ----- metrics, checkpoints ---------------------------------------------------------------------------

    def _metrics(self, rollout: rl.Rollout, update: dict[str, float], seconds: float) -> dict[str, float]:
        def reduce(x: torch.Tensor) -> torch.Tensor:
            return distributed.sum_over_ranks(self.accelerator, x)

        metrics, n_tokens = step_metrics.rollout_metrics(rollout, reduce)
        metrics.update(step_metrics.update_metrics(update, n_tokens, self.accelerator.num_processes, reduce))
        metrics.update(
            lr=self.scheduler.get_last_lr()[0],
            tokens_per_s=n_tokens / seconds,
            step_time_s=seconds,
            skipped_steps=float(self.skipped_steps),
            **self.timings,
        )
        return metrics

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        if self.log is not None and metrics:
            self.log.log(step, metrics)

    def save(self) -> Path:
        self.guard.check_weights(self.model, f"before saving step {self.step}")  # never checkpoint NaN/Inf
        state = {
            "skipped_steps": self.skipped_steps,
            "data": self.order.state_dict(),
            "config": config_loader.to_dict(self.cfg),
        }
        return checkpoint.save(self.accelerator, self.output_dir, self.step, state, self.cfg.train.keep_last)

    def _finish(self) -> Path:
        """Export OUTPUT_DIR/final, close the log and the grader."""
        cfg = self.cfg
        final = checkpoint.export_final(
            self.accelerator,
            self.model,
            self.output_dir / "final",
            self.tokenizer,
            cfg.lora.save if cfg.lora.enabled else None,
            lambda: train_setup.load_base(cfg, self._base_copy),
        )
        if self.log is not None:
            self.log.close()
        if self.grader is not None:
            self.grader.close()
        if self.accelerator.is_main_process:
            run_lock.release(self.output_dir)
        return final


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
