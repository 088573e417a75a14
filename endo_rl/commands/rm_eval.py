"""`endo-rl rm-eval`: accuracy of the endogenous reward (and four baselines) at picking the preferred response.

Argument parsing and printing only; the run (resumable per-item results, report, plots) is
`endo_rl.rm_eval.run`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from endo_rl.core.errors import UserError
from endo_rl.core.paths import check_writable
from endo_rl.rm_eval.metrics import METHODS


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The fields of `RMEvalSettings`, with its defaults (not restated here)."""
    from endo_rl.rm_eval.run import RMEvalSettings

    d = RMEvalSettings(model="", data="", out="")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = """example:
  endo-rl rm-eval --model DIR --data ../shared/benchmarks/rm_bench --limit 20 --out rm.json

Scores go to rm.jsonl as they are made (rerunning the same command resumes); rm.json holds the accuracies,
rm.png the bars. A tie counts as wrong, as in RM-Bench."""
    p.add_argument("--model", required=True, help="model directory, .gguf file, or Hub id")
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside --model (a directory)")
    p.add_argument("--data", required=True, help="RM-Bench .json, pairs .jsonl, or a directory of them")
    p.add_argument("--subsets", nargs="+", default=None, help="subsets to evaluate (default: all in --data)")
    p.add_argument("--system", default=None, help="system prompt for every method (judge prompts included)")
    p.add_argument(
        "--method",
        "--methods",
        dest="methods",
        nargs="+",
        default=d.methods,
        help=f"methods to run (default: all): {' '.join(METHODS)}",
    )
    p.add_argument("--limit", type=int, default=None, help="at most N items per subset")
    p.add_argument(
        "--method-limit",
        action="append",
        default=[],
        metavar="METHOD=N",
        help="run METHOD on the first N items of each subset only (repeatable)",
    )
    p.add_argument(
        "--system-prompts",
        default=None,
        metavar="FILE.yaml",
        help="name -> system prompt (YAML or JSON): endogenous accuracy matrix system prompt x domain",
    )
    p.add_argument(
        "--alpha", type=float, default=d.alpha, help=f"reward scale alpha > 0 (default {d.alpha:g})"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help=f"sequences per forward pass (default {d.batch_size})",
    )
    p.add_argument("--dtype", default=d.dtype, help="auto | float32 | bfloat16 | float16 | float64")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument(
        "--out", required=True, help="report JSON path; per-item results go to the same stem .jsonl"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_method_limits(specs: list[str], methods: list[str]) -> dict[str, int]:
    limits = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or name not in methods or not value.isdigit():
            raise UserError(f"--method-limit {spec!r} must be METHOD=N with METHOD one of {methods}")
        limits[name] = int(value)
    return limits


def check_args(args: argparse.Namespace) -> None:
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if not (args.alpha > 0 and math.isfinite(args.alpha)):
        raise UserError(f"--alpha must be > 0, got {args.alpha}")
    for flag, value in (("--limit", args.limit), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if not args.out.endswith(".json"):
        raise UserError(f"--out {args.out} must end in .json")
    check_writable(args.out, "--out")  # before any model loads
    check_writable(Path(args.out).with_suffix(".png"), "--out")


def run(args: argparse.Namespace) -> int:
    from endo_rl.rm_eval import run as rm_run

    check_args(args)
    settings = rm_run.RMEvalSettings(
        model=args.model,
        data=args.data,
        out=args.out,
        methods=args.methods,
        gguf_file=args.gguf_file,
        subsets=args.subsets,
        limit=args.limit,
        method_limits=parse_method_limits(args.method_limit, args.methods),
        system=args.system,
        system_prompts=rm_run.load_system_prompts(args.system_prompts),
        alpha=args.alpha,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        progress=not args.no_progress,
    )
    report = rm_run.run(settings)
    print(report["table"])
    if "promptable" in report:
        print(json.dumps(report["promptable"]["accuracy"], indent=1))
    print(
        f"\n{report['n_items']} items ({report['items_resumed']} resumed, {report['items_scored_now']} scored in "
        f"{report['wall_time_s']} s); report: {args.out}"
    )
    return 0
