"""The quickstart end to end: pretrain by imitation, freeze the reward, RL against it, evaluate before and after.

1. problem sets from the seed: demonstrations, RL prompts, validation and test sets (disjoint)
2. pretrain a tiny Qwen2 by next-token prediction on the traces       -> OUTPUT_DIR/base/
3. evaluate it on the held-out sets, greedy and sampled                -> report.json "before"
4. RL with the real trainer: the frozen copy of base/ is the endogenous reward model and the KL reference
                                                                       -> OUTPUT_DIR/rl/ (metrics, wandb)
5. evaluate OUTPUT_DIR/rl/final/ on the same sets                      -> report.json "after"
6. before/after table on stdout, error_vs_H.png, learning_curves.png
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from endo_rl.core import config_loader, models
from endo_rl.core.errors import UserError
from endo_rl.quickstart import plots
from endo_rl.quickstart.config import QuickstartConfig
from endo_rl.quickstart.evaluate import SetResult, accuracies, curve_metrics, evaluate_horizons
from endo_rl.quickstart.pretrain import pretrain, save_model, tiny_qwen2
from endo_rl.quickstart.task import Splits, make_splits, rl_rows
from endo_rl.quickstart.tokenizer import build_tokenizer, save_and_reload
from endo_rl.rl.trainer import Trainer


def make_quickstart_splits(cfg: QuickstartConfig) -> Splits:
    """The run's problem sets; impossible task settings are a UserError naming the `task.*` keys."""
    t = cfg.task
    try:
        return make_splits(
            cfg.seed,
            t.train_horizons,
            t.eval_horizons,
            t.n_demonstrations,
            t.n_rl_prompts,
            t.n_eval,
            t.max_operand,
        )
    except ValueError as err:
        raise UserError(f"config section 'task': {err}") from err


def _prepare_output(output_dir: str) -> Path:
    out = Path(output_dir)
    taken = [name for name in ("base", "rl", "report.json") if (out / name).exists()]
    if taken:
        raise UserError(
            f"output dir {out} already holds a quickstart run ({', '.join(taken)}): "
            "pass another --out, or delete it"
        )
    (out / "data").mkdir(parents=True, exist_ok=True)
    return out


def _rl_config(cfg: QuickstartConfig, out: Path):
    rl = cfg.rl
    if rl.train.max_steps % rl.logging.log_every:
        raise UserError("rl.logging.log_every must divide rl.train.max_steps so the last step is logged")
    return replace(
        rl,
        output_dir=str(out / "rl"),
        seed=cfg.seed,
        model=replace(rl.model, path=str(out / "base")),
        data=replace(rl.data, train=str(out / "data" / "rl.jsonl")),
    )


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def run(cfg: QuickstartConfig, log=print) -> dict:
    """Run the quickstart; returns the report (also written to OUTPUT_DIR/report.json)."""
    start = time.time()
    timings: dict[str, float] = {}
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    splits = make_quickstart_splits(cfg)  # first: impossible task settings fail before anything is written
    out = _prepare_output(cfg.output_dir)
    config_loader.save(cfg, out / "quickstart_config.yaml")
    _write_jsonl(out / "data" / "rl.jsonl", rl_rows(splits.rl))
    # the model's config is saved first: it decides how AutoTokenizer loads the tokenizer (see tokenizer.py)
    base = tiny_qwen2(build_tokenizer(), cfg.pretrain, cfg.seed)
    save_model(base, out / "base")
    tokenizer = save_and_reload(out / "base")

    log(f"[1/4] pretraining a tiny Qwen2 by next-token prediction on {len(splits.pretrain)} expert traces")
    pretrain_curve = pretrain(base, tokenizer, splits.pretrain, cfg.pretrain, cfg.seed, log=log)
    save_model(base, out / "base")
    timings["pretrain_s"] = time.time() - start

    sets = splits.test if cfg.eval.split == "test" else splits.validation
    log(f"[2/4] evaluating the imitation policy on the {cfg.eval.split} sets (H = {sorted(sets)})")
    mark = time.time()
    before = evaluate_horizons(base, tokenizer, sets, cfg.eval, cfg.seed)
    timings["eval_before_s"] = time.time() - mark

    log("[3/4] RL against the endogenous reward of the frozen pretrained model")
    mark = time.time()
    rl_cfg = _rl_config(cfg, out)
    curve_sets = {h: ps[: cfg.eval.curve_problems] for h, ps in splits.validation.items()}

    def curves(lm, tok) -> dict[str, float]:  # the learning curves, every rl.eval.every steps
        return curve_metrics(lm, tok, curve_sets, cfg.eval, cfg.seed)

    final_dir = Trainer(rl_cfg, periodic_eval=curves).fit()
    timings["rl_s"] = time.time() - mark

    log(f"[4/4] evaluating the RL policy ({final_dir}) on the same sets")
    mark = time.time()
    after_model = models.load_causal_lm(str(final_dir), dtype="float32")
    after = evaluate_horizons(after_model, models.load_tokenizer(str(final_dir)), sets, cfg.eval, cfg.seed)
    timings["eval_after_s"] = time.time() - mark
    timings["total_s"] = time.time() - start

    report = quickstart_report(cfg, before, after, pretrain_curve, timings)
    (out / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    plots.error_vs_horizon(report, out / "error_vs_H.png")
    plots.learning_curves(out / "rl" / "metrics.jsonl", out / "learning_curves.png")
    log(before_after_table(report))
    log(
        f"wrote {out / 'report.json'}, {out / 'error_vs_H.png'}, {out / 'learning_curves.png'}; "
        f"wandb offline run in {out / 'rl' / 'wandb'}  ({timings['total_s']:.0f}s)"
    )
    return report


def quickstart_report(
    cfg: QuickstartConfig,
    before: dict[str, SetResult],
    after: dict[str, SetResult],
    pretrain_curve: list[dict],
    timings: dict[str, float],
) -> dict:
    mean = {
        tag: sum(r.accuracy for r in res.values()) / len(res)
        for tag, res in (("before", before), ("after", after))
    }
    report = {
        "before": accuracies(before),
        "after": accuracies(after),
        "mean": mean,
        "details": {
            "before": {name: vars(r) for name, r in before.items()},
            "after": {name: vars(r) for name, r in after.items()},
        },
        "pretrain_loss": pretrain_curve[-1]["loss"] if pretrain_curve else None,
        "split": cfg.eval.split,
        "settings": config_loader.to_dict(cfg),
        "timings": timings,
    }
    report["error_exponent"] = plots.error_exponents(report)  # p of a fit error ~ H^p, per stage and mode
    return report


def before_after_table(report: dict) -> str:
    """The before/after table: one row per set, then the mean over sets."""
    lines = [f"{'set':<14}{'before':>8}{'after':>8}{'change':>8}"]
    for name, b in report["before"].items():
        a = report["after"][name]
        lines.append(f"{name:<14}{b:>8.3f}{a:>8.3f}{a - b:>+8.3f}")
    b, a = report["mean"]["before"], report["mean"]["after"]
    lines.append(f"{'mean':<14}{b:>8.3f}{a:>8.3f}{a - b:>+8.3f}")
    return "\n".join(lines)
