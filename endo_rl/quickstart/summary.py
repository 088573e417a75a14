"""Several quickstart runs (seeds) -> one markdown table: before/after per set, mean +- std over runs, per run.

python -m endo_rl.quickstart.summary outputs/qs-seed0 outputs/qs-seed1 outputs/qs-seed2
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from endo_rl.errors import UserError


def load_reports(dirs: list[str]) -> list[dict]:
    reports = []
    for d in dirs:
        path = Path(d) / "report.json"
        if not path.is_file():
            raise UserError(f"{path} does not exist: is {d} a finished quickstart output dir?")
        reports.append(json.loads(path.read_text(encoding="utf-8")))
    sets = [list(r["before"]) for r in reports]
    if any(s != sets[0] for s in sets):
        raise UserError("the runs were evaluated on different sets; compare runs of one recipe")
    return reports


def _mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}"


def markdown_table(reports: list[dict]) -> str:
    """Accuracy in %; `a ± b` is the mean and sample std over runs; per-run columns are before -> after."""
    seeds = [r["settings"]["seed"] for r in reports]
    header = ["set", "before", "after", "change", *[f"seed {s}" for s in seeds]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = [
        (name, [r["before"][name] for r in reports], [r["after"][name] for r in reports])
        for name in reports[0]["before"]
    ]
    rows.append(("**mean**", [r["mean"]["before"] for r in reports], [r["mean"]["after"] for r in reports]))
    for name, before, after in rows:
        change = [a - b for a, b in zip(after, before)]
        per_run = [f"{100 * b:.1f} → {100 * a:.1f}" for b, a in zip(before, after)]
        lines.append(
            f"| {name} | {_mean_std(before)} | {_mean_std(after)} | {_mean_std(change)} | "
            + " | ".join(per_run)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    dirs = sys.argv[1:] if argv is None else argv
    if not dirs:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        print(markdown_table(load_reports(dirs)))
    except UserError as err:
        print(f"summary: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
