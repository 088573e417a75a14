"""`endo-rl eval`: accuracy of a model on math benchmarks, or re-grading of saved completions.

endo-rl eval --model PATH --benchmarks math500,gsm8k --data-dir DIR --limit 50 --out report.json
endo-rl eval --predictions report.predictions.jsonl --data-dir DIR --out regraded.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from endo_rl.core.errors import UserError

EPILOG = """examples:
  endo-rl eval --model DIR --benchmarks math500,gsm8k --data-dir ../shared/benchmarks --limit 50 --out r.json
  endo-rl eval --predictions r.predictions.jsonl --data-dir ../shared/benchmarks --out regraded.json
  endo-rl compare before.json after.json

Offline (HF_HUB_OFFLINE=1 or no network) pass --data-dir DIR with DIR/<benchmark>/test.jsonl. Completions are
appended to <out>.predictions.jsonl as they are generated; rerunning the same command resumes from them.
The report counts no-answer, parse-error and timeout gradings separately (never silently as zeros)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `EvalSettings`, with its defaults (not restated here), plus model and file paths."""
    from endo_rl.core.templates import TEMPLATES
    from endo_rl.evaluation.benchmarks import SPECS
    from endo_rl.evaluation.evaluator import EvalSettings

    d = EvalSettings()
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    p.add_argument("--model", default=None, help="model directory, .gguf file, or Hub id")
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside --model (a directory)")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the model's)")
    p.add_argument("--benchmarks", default=",".join(d.benchmarks), help=f"comma list of {', '.join(SPECS)}")
    p.add_argument(
        "--data-dir", default=d.data_dir, help="directory with <benchmark>/test.jsonl (default: Hub datasets)"
    )
    p.add_argument("--template", default=d.template, help=f"one of {', '.join(TEMPLATES)}")
    p.add_argument(
        "--max-new-tokens", type=int, default=None, help="default 1024; 2048 with --extract harness"
    )
    p.add_argument(
        "--extract",
        default=d.extract,
        choices=["boxed", "harness"],
        help="last \\boxed{} (default, as the training reward) or the Qwen2.5-Math harness's fallback chain",
    )
    p.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=d.top_p, help=f"default {d.top_p}")
    p.add_argument("--top-k", type=int, default=d.top_k, help="0 = off (default)")
    p.add_argument(
        "--n-samples",
        type=int,
        default=d.n_samples,
        help="samples per problem for avg@k (needs temperature > 0)",
    )
    p.add_argument("--limit", type=int, default=d.limit, help="only the first N problems of each benchmark")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument(
        "--backend",
        default=d.backend,
        choices=["auto", "hf", "static"],
        help="generation backend (default auto)",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--grading-timeout", type=float, default=d.grading_timeout_s, help="seconds per answer (default 5)"
    )
    p.add_argument("--out", required=True, help="report JSON path")
    p.add_argument(
        "--save-predictions",
        default=None,
        help="completions JSONL, resumed if it exists (default: <out>.predictions.jsonl)",
    )
    p.add_argument(
        "--predictions", default=None, help="re-grade this completions JSONL instead of generating"
    )
    p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _settings(args: argparse.Namespace):
    from endo_rl.evaluation.benchmarks import parse_names
    from endo_rl.evaluation.evaluator import EvalSettings

    return EvalSettings(
        benchmarks=parse_names(args.benchmarks),
        data_dir=args.data_dir,
        template=args.template,
        max_new_tokens=args.max_new_tokens,
        extract=args.extract,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        n_samples=args.n_samples,
        limit=args.limit,
        batch_size=args.batch_size,
        backend=args.backend,
        grading_timeout_s=args.grading_timeout,
        seed=args.seed,
        progress=not args.no_progress,
    )


def summary_table(report: dict) -> str:
    lines = [
        f"{'benchmark':<15} {'acc %':>7} {'±se':>6} {'n':>5} {'trunc':>6} {'no ans':>6} {'t/o':>4} {'parse':>6}"
    ]
    for name, m in report["benchmarks"].items():
        se = "-" if m["stderr"] is None else f"{100 * m['stderr']:.1f}"
        lines.append(
            f"{name:<15} {100 * m['accuracy']:>7.1f} {se:>6} {m['n']:>5} {m['n_truncated']:>6} "
            f"{m['n_no_answer']:>6} {m['n_timeout']:>4} {m['n_parse_error']:>6}"
        )
    avg = report["average"]
    se = "-" if avg["stderr"] is None else f"{100 * avg['stderr']:.1f}"
    lines.append(f"{'average':<15} {100 * avg['accuracy']:>7.1f} {se:>6}")
    lines.append(f"answer extraction: {report['settings'].get('extract', 'boxed')}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from endo_rl.evaluation import evaluator

    out = Path(args.out)
    _check_writable(out)
    if args.predictions is not None:
        if args.model is not None:
            raise UserError("--predictions re-grades saved completions: do not pass --model with it")
        report = evaluator.regrade(
            args.predictions, args.data_dir, args.grading_timeout, not args.no_progress, args.extract
        )
    else:
        if args.model is None:
            raise UserError("--model is required (or --predictions FILE to re-grade saved completions)")
        settings = _settings(args)
        settings.validate()
        report = _generate_and_grade(args, settings, out)
    evaluator.write_report(report, out)
    print(summary_table(report))
    print(f"\nreport: {out}")
    return 0


def _check_writable(out: Path) -> None:
    """Fail before any model loads when the report cannot be written."""
    if out.parent.exists() and not out.parent.is_dir():
        raise UserError(f"--out {out}: {out.parent} is a file, not a directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.parent / f".{out.name}.write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(
            f"--out {out}: directory {out.parent} is not writable ({err.strerror or err})"
        ) from err


def _generate_and_grade(args: argparse.Namespace, settings, out: Path) -> dict:
    from endo_rl.core import models
    from endo_rl.evaluation import evaluator

    device = models.check_device(args.device or models.default_device(), "--device")
    tokenizer = models.load_tokenizer(
        args.tokenizer or args.model, None if args.tokenizer else args.gguf_file
    )
    model = models.load_causal_lm(args.model, args.gguf_file, args.dtype, device)
    models.check_vocab(model, tokenizer)
    model.eval()
    predictions = (
        Path(args.save_predictions) if args.save_predictions else out.with_suffix(".predictions.jsonl")
    )
    name = args.model if args.gguf_file is None else f"{args.model}/{args.gguf_file}"
    return evaluator.run_eval(model, tokenizer, settings, predictions, name)
