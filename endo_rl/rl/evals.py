"""Evaluation during training: before, every `eval.every` steps, and after.

By default it runs the math evaluator (`endo_rl.evaluation.evaluator.evaluate`): reports go to
OUTPUT_DIR/eval/{before,step-N,after}/ and, when before and after both exist, the comparison table is printed and
drawn to OUTPUT_DIR/eval/comparison.png. The evaluation uses the training template (`data.template`) and
`generation.backend`, so before and after see the same prompt. A caller may pass its own `periodic` function for
the `eval.every` evaluations instead (the quickstart scores its own held-out problems that way).

An evaluation of weights already evaluated is not run again: `eval.every`'s step 0 reuses `before` (and `after`
reuses the last step's), its report copied under the new tag.

Every evaluation runs on the main process with the parameters gathered (ZeRO-3), and inside a forked RNG so that
evaluating does not change the training run's random stream (resume stays exact, and a run with evaluations
trains exactly as one without).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from endo_rl.core.config import ExperimentConfig
from endo_rl.rl import distributed

PeriodicEval = Callable[[torch.nn.Module, object], dict[str, float]]
"""(policy LM, tokenizer) -> metrics, for `eval.every`."""


class TrainEval:
    def __init__(
        self, cfg: ExperimentConfig, output_dir: Path, tokenizer, periodic: PeriodicEval | None = None
    ):
        self.cfg, self.dir, self.tokenizer = cfg, Path(output_dir) / "eval", tokenizer
        self.periodic_fn = periodic
        self.done: dict[int, str] = {}
        """step -> tag of the math evaluation run at that step."""

    def settings(self):
        from endo_rl.evaluation.evaluator import EvalSettings

        cfg = self.cfg
        return EvalSettings.from_config(
            cfg.eval,
            template=cfg.data.template,
            batch_size=cfg.generation.batch_size,
            backend=cfg.generation.backend,
            max_prompt_length=cfg.data.max_prompt_length,
            seed=cfg.seed,
        )

    def due(self, step: int) -> bool:
        """Whether `eval.every` asks for an evaluation after `step` steps (0: before the first)."""
        every = self.cfg.eval.every
        return bool(every) and (step % every == 0 or step == self.cfg.train.max_steps)

    def periodic(self, step: int, model: torch.nn.Module, accelerator) -> dict[str, float]:
        """The `eval.every` evaluation after `step` steps: the caller's function, or the math evaluator."""
        if self.periodic_fn is None:
            return self.run(f"step-{step}", model, accelerator, step)
        return self._isolated(model, accelerator, lambda lm: self.periodic_fn(lm, self.tokenizer)) or {}

    def run(self, tag: str, model: torch.nn.Module, accelerator, step: int | None = None) -> dict[str, float]:
        """Evaluate the current policy (after `step` steps); returns metrics `eval/<benchmark>/accuracy` and
        `eval/accuracy`. Weights already evaluated at `step` are not evaluated again: that report is copied, and
        no metrics are returned (they were logged at that step already; a second row would repeat them)."""
        from endo_rl.evaluation.evaluator import evaluate

        if step in self.done:
            self._reuse(tag, self.done[step], accelerator)
            return {}
        settings = self.settings()
        settings.validate()
        report = self._isolated(
            model,
            accelerator,
            lambda lm: evaluate(lm, self.tokenizer, settings, self.dir / tag, model_name=tag),
        )
        metrics = {}
        if report is not None:
            if tag == "after":
                self._compare(report)
            metrics = {f"eval/{name}/accuracy": m["accuracy"] for name, m in report["benchmarks"].items()}
            metrics["eval/accuracy"] = report["average"]["accuracy"]
        if step is not None:  # on every process, so that all of them take the same path next time
            self.done[step] = tag
        return metrics

    def _reuse(self, tag: str, source: str, accelerator) -> None:
        """The report of `source` (same weights) as `tag`'s, copied on the main process."""
        if accelerator.is_main_process:
            shutil.copytree(self.dir / source, self.dir / tag, dirs_exist_ok=True)
            print(f"eval {tag}: the same weights as eval {source}; its report is reused")
            if tag == "after":
                self._compare(json.loads((self.dir / tag / "report.json").read_text(encoding="utf-8")))
        accelerator.wait_for_everyone()

    def _isolated(self, model: torch.nn.Module, accelerator, fn: Callable[[torch.nn.Module], object]):
        """fn(policy LM) on the main process (None elsewhere), parameters gathered, RNG state restored after."""
        result = None
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with (
            torch.random.fork_rng(devices=devices),
            distributed.gathered_for_generation(model, accelerator) as policy,
        ):
            if accelerator.is_main_process:
                result = fn(policy.lm)
        accelerator.wait_for_everyone()
        return result

    def _compare(self, after: dict) -> None:
        before_path = self.dir / "before" / "report.json"
        if not before_path.exists():
            return
        from endo_rl.evaluation.reports import compare_reports

        before = json.loads(before_path.read_text(encoding="utf-8"))
        print(compare_reports(before, after, self.dir / "comparison.png"))
