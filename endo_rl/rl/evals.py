"""Evaluation before and after training, through the evaluator (`endo_rl.evaluation.evaluator.evaluate`).

Reports go to OUTPUT_DIR/eval/{before,after}/ and, when both exist, the comparison table is printed and drawn
to OUTPUT_DIR/eval/comparison.png. The evaluation uses the training template (`data.template`) so before and
after see the same prompt. It runs on the main process with the parameters gathered (ZeRO-3), and inside a
forked RNG so that evaluating does not change the training run's random stream (resume stays exact).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from endo_rl.core.config import ExperimentConfig
from endo_rl.rl import distributed


class TrainEval:
    def __init__(self, cfg: ExperimentConfig, output_dir: Path, tokenizer):
        self.cfg, self.dir, self.tokenizer = cfg, Path(output_dir) / "eval", tokenizer

    def settings(self):
        from endo_rl.evaluation.evaluator import EvalSettings

        e = self.cfg.eval
        return EvalSettings(
            benchmarks=list(e.benchmarks),
            data_dir=e.data_dir,
            template=self.cfg.data.template,
            max_new_tokens=e.max_new_tokens,
            temperature=e.temperature,
            n_samples=e.n_samples,
            limit=e.limit,
            batch_size=self.cfg.generation.batch_size,
            max_prompt_length=self.cfg.data.max_prompt_length,
            seed=self.cfg.seed,
        )

    def run(self, tag: str, model: torch.nn.Module, accelerator) -> dict[str, float]:
        """Evaluate the current policy; returns metrics `eval/<benchmark>/accuracy` and `eval/accuracy`."""
        from endo_rl.evaluation.evaluator import evaluate

        settings = self.settings()
        settings.validate()
        report = None
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with (
            torch.random.fork_rng(devices=devices),
            distributed.gathered_for_generation(model, accelerator) as policy,
        ):
            if accelerator.is_main_process:
                report = evaluate(policy.lm, self.tokenizer, settings, self.dir / tag, model_name=tag)
        accelerator.wait_for_everyone()
        if report is None:
            return {}
        if tag == "after":
            self._compare(report)
        metrics = {f"eval/{name}/accuracy": m["accuracy"] for name, m in report["benchmarks"].items()}
        metrics["eval/accuracy"] = report["average"]["accuracy"]
        return metrics

    def _compare(self, after: dict) -> None:
        before_path = self.dir / "before" / "report.json"
        if not before_path.exists():
            return
        from endo_rl.evaluation.reports import compare_reports

        before = json.loads(before_path.read_text(encoding="utf-8"))
        print(compare_reports(before, after, self.dir / "comparison.png"))
