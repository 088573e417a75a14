"""Math evaluation: generate with the training loop's `generate`, save every completion, grade, report.

    for each benchmark:
        problems   = load_benchmark(name)[:limit]
        todo       = (problem, sample) pairs not yet in the predictions file        # resume
        for chunk of todo (sorted by prompt length):
            completions = generate(model, prompts, ...)                              # endo_rl.generation.sampling
            append each to predictions.jsonl                                          # survives a kill
        grades     = Grader (math-verify in a child process, hard timeout)
        metrics    = accuracy/avg@k +- stderr, truncated, no answer, timeouts, parse errors, tokens, time

`evaluate(model, tokenizer, settings, out_dir)` is what training calls before and after; `regrade(...)` is
`endo-rl eval --predictions`, grading saved completions without a model.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from endo_rl.core import templates
from endo_rl.core.config import BenchmarkConfig
from endo_rl.core.errors import UserError
from endo_rl.evaluation import metrics as eval_metrics
from endo_rl.evaluation.benchmarks import (
    PAPER_BENCHMARKS,
    ROUNDED_GOLDS,
    Problem,
    check_name,
    load_benchmark,
)
from endo_rl.evaluation.extraction import HARNESS_MAX_NEW_TOKENS, check_mode
from endo_rl.evaluation.grading import Grade, Grader
from endo_rl.evaluation.predictions import (
    Prediction,
    PredictionWriter,
    check_resume_settings,
    read_predictions,
)
from endo_rl.generation.sampling import generate


@dataclass
class EvalSettings(BenchmarkConfig):
    """Benchmarks and decoding (`BenchmarkConfig`: the `eval.*` keys of training, the flags of `endo-rl eval`)
    plus how this run generates and grades. `from_config` builds it from training's `eval` section."""

    benchmarks: list[str] = field(default_factory=lambda: list(PAPER_BENCHMARKS))
    """Benchmark names (see endo_rl.evaluation.benchmarks.SPECS); the CLI's default is all the paper's."""
    template: str = "qwen25-math-cot"
    """Prompt template (endo_rl.core.templates.TEMPLATES); use the same before and after training."""
    batch_size: int = 16
    """Sequences per `generate` call."""
    backend: Literal["auto", "hf", "static"] = "auto"
    """Generation backend, as `generation.backend`."""
    grading_timeout_s: float = 5.0
    """Seconds per answer for math-verify."""
    seed: int = 0
    """Seeds sampling."""
    progress: bool = True
    """Progress bars."""

    @classmethod
    def from_config(cls, benchmark: BenchmarkConfig, **run) -> EvalSettings:
        """Every `BenchmarkConfig` field of `benchmark` (e.g. training's `eval` section), plus `run` fields."""
        shared = {f.name: copy.copy(getattr(benchmark, f.name)) for f in dataclasses.fields(BenchmarkConfig)}
        return cls(**shared, **run)

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if self.max_new_tokens is None:
            self.max_new_tokens = HARNESS_MAX_NEW_TOKENS if self.extract == "harness" else 1024

    def validate(self) -> None:
        check_mode(self.extract)
        for name in self.benchmarks:
            check_name(name)
        templates.check_template(self.template)
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise UserError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {self.batch_size}")
        check_grading_timeout(self.grading_timeout_s)
        if self.n_samples < 1:
            raise UserError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.n_samples > 1 and self.temperature == 0:
            raise UserError(
                f"n_samples={self.n_samples} with temperature 0 draws the same greedy answer each time"
            )
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit must be >= 1, got {self.limit}")

    def decoding(self, model_name: str) -> dict:
        """What a resumed run must share with the run that wrote the predictions file."""
        return {
            "model": model_name,
            "template": self.template,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "n_samples": self.n_samples,
            "extract": self.extract,
        }


def evaluate(
    model: torch.nn.Module, tokenizer, settings: EvalSettings, out_dir: str | Path, model_name: str = "model"
) -> dict:
    """Evaluate and write `out_dir/predictions.jsonl` and `out_dir/report.json`; returns the report.

    Re-running with the same out_dir resumes from the saved completions.
    """
    out_dir = Path(out_dir)
    was_training = model.training
    model.eval()  # dropout off while generating; training mode is restored for the caller
    try:
        report = run_eval(model, tokenizer, settings, out_dir / "predictions.jsonl", model_name)
    finally:
        model.train(was_training)
    write_report(report, out_dir / "report.json")
    return report


def run_eval(
    model: torch.nn.Module, tokenizer, settings: EvalSettings, predictions_path: Path, model_name: str
) -> dict:
    settings.validate()
    predictions_path = Path(predictions_path)
    decoding = settings.decoding(model_name)
    saved, rows = (None, [])
    if predictions_path.exists():
        saved, rows = read_predictions(predictions_path, tolerate_torn_tail=True)
        if saved is not None:  # files from before top_k was a setting decoded with top_k=0
            saved = {"top_k": 0, "extract": "boxed", **saved}  # (and boxed-only before extract existed)
        check_resume_settings(predictions_path, saved, decoding)
    done = {p.key(): p for _, p in rows}
    n_resumed = 0
    torch.manual_seed(settings.seed)
    per_bench, results = {}, []
    with (
        PredictionWriter(predictions_path, decoding) as writer,
        Grader(settings.grading_timeout_s, extract=settings.extract) as grader,
    ):
        for name in settings.benchmarks:
            start = time.perf_counter()
            problems = load_benchmark(name, settings.data_dir)
            size = len(problems)
            problems = problems[: settings.limit] if settings.limit else problems
            keys = [(name, p.index, s) for p in problems for s in range(settings.n_samples)]
            n_resumed += sum(k in done for k in keys)
            _generate_missing(model, tokenizer, settings, name, problems, done, writer)
            preds = [done[k] for k in keys]
            grades = _grade_all(grader, problems, preds, settings.progress, name)
            per_bench[name] = benchmark_summary(preds, grades, size, time.perf_counter() - start)
            results += [_result_row(p, g) for p, g in zip(preds, grades)]
    settings_out = {
        **decoding,
        "benchmarks": settings.benchmarks,
        "limit": settings.limit,
        "data_dir": settings.data_dir,
        "seed": settings.seed,
        "grading_timeout_s": settings.grading_timeout_s,
    }
    return build_report(settings_out, per_bench, results, str(predictions_path), n_resumed)


def _generate_missing(
    model,
    tokenizer,
    settings: EvalSettings,
    name: str,
    problems: Sequence[Problem],
    done: dict,
    writer: PredictionWriter,
) -> None:
    """Generate every (problem, sample) of benchmark `name` not in `done`, a micro-batch at a time, appending
    each micro-batch to the predictions file as it finishes. Work is sorted by prompt length, so a resumed
    run rebuilds the same micro-batches after the last saved one."""
    prompts = {
        p.index: templates.prompt_ids(settings.template, tokenizer, _question(p, settings.extract))
        for p in problems
    }
    work = sorted(
        ((p.index, s) for p in problems for s in range(settings.n_samples)),
        key=lambda w: (len(prompts[w[0]]), w),
    )
    chunks = [work[i : i + settings.batch_size] for i in range(0, len(work), settings.batch_size)]
    stop_ids = templates.stop_token_ids(tokenizer)
    pad_id = templates.pad_token_id(tokenizer)
    bar = tqdm(total=len(work), desc=f"{name}", unit="seq", disable=not settings.progress)
    for chunk in chunks:
        todo = [w for w in chunk if (name, *w) not in done]
        bar.update(len(chunk) - len(todo))
        if not todo:
            continue
        completions = generate(
            model,
            [prompts[i] for i, _ in todo],
            settings,  # a SamplingConfig
            stop_ids,
            pad_id,
            batch_size=settings.batch_size,
            backend=settings.backend,
        )
        for (index, sample), c in zip(todo, completions):
            text = tokenizer.decode(c.token_ids, skip_special_tokens=True)
            pred = Prediction(name, index, sample, text, len(c.token_ids), c.truncated)
            writer.append(pred)
            done[pred.key()] = pred
        bar.update(len(todo))
    bar.close()


def _question(problem: Problem, extract: str) -> str:
    """The question as the prompt shows it. The Qwen2.5-Math harness strips surrounding whitespace and asks
    yes/no and true/false questions with a hint; "boxed" keeps the benchmark's text unchanged."""
    if extract != "harness":
        return problem.question
    question = problem.question.strip()
    gold = problem.gold.strip().lower()
    hint = {
        "true": " (True or False)",
        "false": " (True or False)",
        "yes": " (Yes or No)",
        "no": " (Yes or No)",
    }
    return question + hint.get(gold, "")


def _grade_all(
    grader: Grader, problems: Sequence[Problem], preds: Sequence[Prediction], progress: bool, name: str
) -> list[Grade]:
    gold = {p.index: p.gold for p in problems}
    rounded = name in ROUNDED_GOLDS
    return [
        grader.grade(gold[p.index], p.completion, rounded)
        for p in tqdm(preds, desc=f"grading {name}", unit="ans", disable=not progress)
    ]


def _result_row(pred: Prediction, grade: Grade) -> dict:
    return {
        "benchmark": pred.benchmark,
        "index": pred.index,
        "sample": pred.sample,
        "correct": grade.correct,
        "status": grade.status,
        "truncated": pred.truncated,
    }


def benchmark_summary(
    preds: Sequence[Prediction], grades: Sequence[Grade], size: int, wall_time_s: float
) -> dict:
    """Per-benchmark metrics from its graded predictions (several samples of one index are its k samples)."""
    per_problem: dict[int, list[bool]] = {}
    for pred, grade in zip(preds, grades):
        per_problem.setdefault(pred.index, []).append(grade.correct)
    fractions = eval_metrics.problem_fractions(list(per_problem.values()))
    accuracy, stderr = eval_metrics.mean_and_stderr(fractions)
    ks = {len(v) for v in per_problem.values()}
    tokens = [p.n_tokens for p in preds]
    out = {
        "accuracy": accuracy,
        "stderr": stderr,
        "n": len(per_problem),
        "size": size,
        "k": max(ks) if len(ks) == 1 else sorted(ks),
        "n_completions": len(preds),
        "n_correct": sum(g.correct for g in grades),
        "n_truncated": sum(bool(p.truncated) for p in preds),
        **{f"n_{s}": sum(g.status == s for g in grades) for s in ("no_answer", "timeout", "parse_error")},
        "tokens_generated": None if None in tokens else sum(tokens),
        "wall_time_s": round(wall_time_s, 3),
    }
    if max(ks) > 1:
        out["avg_at_k"] = accuracy
        out["pass_at_k"] = eval_metrics.pass_at_k(list(per_problem.values()))
    return out


def build_report(
    settings: dict, per_bench: dict, results: list, predictions_file: str | None, n_resumed: int
) -> dict:
    accs = [m["accuracy"] for m in per_bench.values()]
    mean, se = eval_metrics.macro_average(accs, [m["stderr"] for m in per_bench.values()])
    return {
        "settings": settings,
        "benchmarks": per_bench,
        "average": {"accuracy": mean, "stderr": se, "over": list(per_bench)},
        "results": results,
        "predictions_file": predictions_file,
        "resumed_completions": n_resumed,
        "wall_time_s": round(sum(m["wall_time_s"] for m in per_bench.values()), 3),
    }


def check_grading_timeout(seconds: float) -> None:
    """A timeout <= 0 would turn every answer into a timeout/parse error: refused, not scored as zeros."""
    if not (seconds > 0 and math.isfinite(seconds)):
        raise UserError(f"grading timeout must be a number of seconds > 0, got {seconds}")


def regrade(
    predictions_path: str | Path,
    data_dir: str | Path | None,
    grading_timeout_s: float = 5.0,
    progress: bool = False,
    extract: str = "boxed",
) -> dict:
    """Grade saved completions without a model, finding answers as `extract` says. Results keep the file's
    row order."""
    check_mode(extract)
    check_grading_timeout(grading_timeout_s)
    path = Path(predictions_path)
    saved, rows = read_predictions(path)
    if not rows:
        raise UserError(f"predictions file {path} has no completions")
    names = list(dict.fromkeys(p.benchmark for _, p in rows))
    problems = {}
    for name in names:
        check_name(name)
        problems[name] = {p.index: p for p in load_benchmark(name, data_dir)}
    for lineno, p in rows:
        if p.index not in problems[p.benchmark]:
            raise UserError(
                f"{path}, line {lineno}: {p.benchmark} has {len(problems[p.benchmark])} rows, "
                f"index {p.index} is out of range"
            )
    per_bench, grades = {}, {}
    with Grader(grading_timeout_s, extract=extract) as grader:
        for name in names:
            start = time.perf_counter()
            mine = [(lineno, p) for lineno, p in rows if p.benchmark == name]
            gs = _grade_all(grader, list(problems[name].values()), [p for _, p in mine], progress, name)
            grades.update({lineno: g for (lineno, _), g in zip(mine, gs)})
            per_bench[name] = benchmark_summary(
                [p for _, p in mine], gs, len(problems[name]), time.perf_counter() - start
            )
    results = [_result_row(p, grades[lineno]) for lineno, p in rows]
    settings = {
        **(saved or {}),
        "benchmarks": names,
        "data_dir": None if data_dir is None else str(data_dir),
        "grading_timeout_s": grading_timeout_s,
        "extract": extract,
        "regraded_from": str(path),
    }
    return build_report(settings, per_bench, results, str(path), 0)


def write_report(report: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
