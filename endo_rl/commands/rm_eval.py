"""`endo-rl rm-eval`: accuracy of the endogenous reward (and four baselines) at picking the preferred response.

Per-item scores are appended to `<out>.jsonl` as they are produced (first line: the settings); a restarted run
with the same settings skips the items already there. The report `<out>` is written from that file at the end,
with `<out stem>.png` (accuracy bars) and, with --system-prompts, `<out stem>_promptable.png` (heat map).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import time
from pathlib import Path

from endo_rl.core.errors import UserError
from endo_rl.core.paths import check_writable
from endo_rl.rm_eval.metrics import METHODS

RESULTS_VERSION = 1
"""Bumped when the stored per-item scores change meaning (templates, score definitions)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
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
        default=list(METHODS),
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
    p.add_argument("--alpha", type=float, default=1.0, help="reward scale alpha > 0 (default 1)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
    p.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16 | float64")
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


def load_system_prompts(path: str | None) -> dict[str, str]:
    if path is None:
        return {}
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UserError(f"--system-prompts file {path} does not exist")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))  # JSON is YAML too
    except yaml.YAMLError as err:
        raise UserError(f"--system-prompts file {path} is not valid YAML/JSON: {err}") from err
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items())
    ):
        raise UserError(f"--system-prompts file {path} must map names to system prompt strings")
    return data


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


def settings(args: argparse.Namespace, limits: dict[str, int], prompts: dict[str, str]) -> dict:
    """What the stored scores depend on; a resumed run must match it."""
    return {
        "version": RESULTS_VERSION,
        "model": args.model,
        "gguf_file": args.gguf_file,
        "system": args.system,
        "methods": args.methods,
        "method_limits": limits,
        "alpha": args.alpha,
        "dtype": args.dtype,
        "system_prompts": prompts,
    }


def read_results(path: Path, expected: dict) -> dict[tuple[str, int], dict]:
    """Records already in the results file, by item key; an error when it was made with other settings."""
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return {}
    try:
        found = json.loads(lines[0]).get("settings")
    except (json.JSONDecodeError, AttributeError):
        raise UserError(f"{path}:1: not an rm-eval results file; delete it or choose another --out") from None
    if found != expected:
        found = found if isinstance(found, dict) else {}
        diff = [
            f"{k}: file has {found.get(k)!r}, this run {v!r}"
            for k, v in expected.items()
            if found.get(k) != v
        ]
        raise UserError(
            f"{path} was written with other settings ({'; '.join(diff)}); delete it or choose another --out"
        )
    records = {}
    for lineno, line in enumerate(lines[1:], start=2):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a run killed mid-write leaves a partial last line: rescore that item
            if lineno == len(lines):
                break
            raise UserError(f"{path}:{lineno}: corrupt results line; delete the file to start over") from None
        records[(rec["subset"], rec["prompt_index"])] = rec
    return records


NO_LIMIT = 1 << 62


def score_group(
    judge, items, ranks: list[int], methods: list[str], limits: dict[str, int], prompts: dict[str, str]
) -> list[dict]:
    """Scores of all methods for a few items, each method batched over all their responses.
    ranks[k] is item k's position within its subset, for --method-limit."""
    records = [
        {"subset": it.subset, "prompt_index": it.index, "scores": {}, "system_prompts": {}} for it in items
    ]
    flat = [(k, it.prompt, r) for k, it in enumerate(items) for r in (*it.chosen, *it.rejected)]

    def rows(*names: str) -> list[int]:
        limit = max(limits.get(n, NO_LIMIT) for n in names)
        return [i for i, (k, _, _) in enumerate(flat) if ranks[k] < limit]

    def assign(field: str, name: str, values: list[float], keep: list[int]) -> None:
        per_item: dict[int, list[float]] = {}
        for i, v in zip(keep, values):
            per_item.setdefault(flat[i][0], []).append(v)
        for k, vals in per_item.items():
            if ranks[k] < limits.get(name, NO_LIMIT):
                n = len(items[k].chosen)
                records[k][field][name] = {"chosen": vals[:n], "rejected": vals[n:]}

    def texts(keep: list[int]) -> tuple[list[str], list[str]]:
        return [flat[i][1] for i in keep], [flat[i][2] for i in keep]

    shared = [m for m in ("endogenous", "loglik_norm") if m in methods]
    if shared:  # one forward pass gives both
        keep = rows(*shared)
        rewards, logliks = judge.endogenous(*texts(keep), judge.system)
        for m, values in (("endogenous", rewards), ("loglik_norm", logliks)):
            if m in methods:
                assign("scores", m, values, keep)
    for method in ("verifier", "genrm_pointwise"):
        if method in methods:
            keep = rows(method)
            assign("scores", method, getattr(judge, method)(*texts(keep)), keep)
    if "genrm_pairwise" in methods:
        todo = [k for k in range(len(items)) if ranks[k] < limits.get("genrm_pairwise", NO_LIMIT)]
        _score_pairwise(judge, items, todo, records)
    for name, system in prompts.items():
        keep = list(range(len(flat)))
        assign("system_prompts", name, judge.endogenous(*texts(keep), system)[0], keep)
    return records


def _score_pairwise(judge, items, todo: list[int], records: list[dict]) -> None:
    """All chosen x rejected cells of the items in `todo`, in one batched call (both orders each)."""
    cells = [
        (k, i, j) for k in todo for i in range(len(items[k].chosen)) for j in range(len(items[k].rejected))
    ]
    if not cells:
        return
    p = judge.genrm_pairwise(
        [items[k].prompt for k, _, _ in cells],
        [items[k].chosen[i] for k, i, _ in cells],
        [items[k].rejected[j] for k, _, j in cells],
    )
    for k in todo:
        n = len(items[k].chosen)
        records[k]["scores"]["genrm_pairwise"] = {"p_chosen": [[0.0] * n for _ in range(n)]}
    for (k, i, j), v in zip(cells, p):
        records[k]["scores"]["genrm_pairwise"]["p_chosen"][i][j] = v


def groups(indices: list[int], items, batch_size: int) -> list[list[int]]:
    """Consecutive items whose responses together fill about one batch (at least one item per group)."""
    out, current, size = [], [], 0
    for k in indices:
        current.append(k)
        size += len(items[k].chosen) + len(items[k].rejected)
        if size >= batch_size:
            out.append(current)
            current, size = [], 0
    return out + ([current] if current else [])


def score_pending(args, items, ranks: list[int], done: dict, header: dict, path: Path) -> int:
    """Score the items not in `done`, appending each record to `path` as soon as its group is scored."""
    from tqdm.auto import tqdm

    from endo_rl.core import models
    from endo_rl.reward.reference import ReferenceModel
    from endo_rl.rm_eval.judges import Judge

    pending = [k for k, it in enumerate(items) if it.key not in done]
    if not pending:
        return 0
    device = models.check_device(args.device or models.default_device(), "--device")
    tokenizer = models.load_tokenizer(args.model, args.gguf_file)
    model = models.load_causal_lm(args.model, args.gguf_file, args.dtype, device)
    models.check_vocab(model, tokenizer)
    judge = Judge(ReferenceModel(model, tokenizer, alpha=args.alpha, batch_size=args.batch_size), args.system)
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists() or path.stat().st_size == 0
    with (
        open(path, "a", encoding="utf-8") as fh,
        tqdm(total=len(pending), desc="rm-eval", unit="item", disable=args.no_progress) as bar,
    ):
        if new_file:
            fh.write(json.dumps({"settings": header}) + "\n")
        for group in groups(pending, items, args.batch_size):
            records = score_group(
                judge,
                [items[k] for k in group],
                [ranks[k] for k in group],
                args.methods,
                header["method_limits"],
                header["system_prompts"],
            )
            for rec in records:
                fh.write(json.dumps(rec) + "\n")
                done[(rec["subset"], rec["prompt_index"])] = rec
            fh.flush()
            bar.update(len(group))
    return len(pending)


def build_report(args, items, done: dict, header: dict) -> dict:
    from endo_rl.rm_eval import metrics as rm_eval

    by_key = {it.key: it for it in items}
    records = [done[it.key] for it in items]
    results = {m: rm_eval.summarize(records, by_key, m) for m in args.methods}
    report = {
        "settings": header,
        "data": args.data,
        "subsets": sorted({it.subset for it in items}),
        "limit": args.limit,
        "n_items": len(items),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "ties": "a tie (equal scores, or a pairwise probability of exactly 0.5) counts as wrong, as in RM-Bench",
        "styles": ["concise", "detailed_plain", "detailed_markdown"],
        "results": results,
        "table": rm_eval.format_table(results),
        "pairs": rm_eval.endogenous_pairs(records),
    }
    if header["system_prompts"]:
        report["promptable"] = rm_eval.promptable_matrix(records, by_key, list(header["system_prompts"]))
    return report


def run(args: argparse.Namespace) -> int:
    from endo_rl.rm_eval import data as rm_data
    from endo_rl.rm_eval import plots as rm_plots

    check_args(args)
    out = check_writable(args.out, "--out")  # before any model loads
    check_writable(out.with_suffix(".png"), "--out")
    limits = parse_method_limits(args.method_limit, args.methods)
    prompts = load_system_prompts(args.system_prompts)
    items = rm_data.load_items(args.data, args.subsets, args.limit)
    ranks, seen = [], {}
    for it in items:
        ranks.append(seen.get(it.subset, 0))
        seen[it.subset] = ranks[-1] + 1
    results_path = out.with_suffix(".jsonl")
    header = settings(args, limits, prompts)
    done = read_results(results_path, header)
    resumed = sum(it.key in done for it in items)
    start = time.time()
    scored = score_pending(args, items, ranks, done, header, results_path)
    report = build_report(args, items, done, header)
    report.update(items_scored_now=scored, items_resumed=resumed, wall_time_s=round(time.time() - start, 1))
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    title = f"{Path(args.model).name}: reward-model accuracy"
    rm_plots.accuracy_bars(report["results"], out.with_suffix(".png"), title)
    if "promptable" in report:
        rm_plots.promptable_heatmap(
            report["promptable"],
            out.with_name(out.stem + "_promptable.png"),
            f"{Path(args.model).name}: endogenous reward, system prompt x domain",
        )
    print(report["table"])
    if "promptable" in report:
        print(json.dumps(report["promptable"]["accuracy"], indent=1))
    print(
        f"\n{len(items)} items ({resumed} resumed, {scored} scored in {report['wall_time_s']} s); report: {out}"
    )
    return 0
