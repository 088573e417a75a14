"""Several quickstart runs (seeds) -> one markdown table: before/after per set, mean +- std over runs, per run.

python -m endo_rl.quickstart.summary outputs/qs-seed0 outputs/qs-seed1 outputs/qs-seed2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from endo_rl.core.errors import UserError


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


def _mean_std(values: list[float], signed: bool = False) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    mean = f"{100 * statistics.mean(values):+.1f}" if signed else f"{100 * statistics.mean(values):.1f}"
    return f"{mean} ± {100 * sd:.1f}"


def markdown_table(reports: list[dict]) -> str:
    """Accuracy in %; `a ± b` is the mean and sample std over runs; per-run columns are before → after."""
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
            f"| {name} | {_mean_std(before)} | {_mean_std(after)} | {_mean_std(change, signed=True)} | "
            + " | ".join(per_run)
            + " |"
        )
    return "\n".join(lines)


def plot_mean_error(reports: list[dict], png_path: Path) -> Path:
    """Mean error (1 - accuracy) vs H over runs, bars = sample std, before/after, one panel per decoding mode."""
    from endo_rl.quickstart.plots import _pyplot, error_by_horizon

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, mode in zip(axes, ("greedy", "sampled")):
        for tag, style in (("before", "o--"), ("after", "s-")):
            curves = [error_by_horizon(r[tag], mode) for r in reports]
            hs = curves[0][0]
            by_h = list(zip(*[errors for _, errors in curves]))
            mean = [statistics.mean(v) for v in by_h]
            sd = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in by_h]
            label = "before RL (imitation)" if tag == "before" else "after RL (endogenous reward)"
            ax.errorbar(hs, mean, yerr=sd, fmt=style, capsize=3, label=label)
        ax.set_title(f"{mode} decoding", fontsize=10)
        ax.set_xlabel("H (reasoning steps)")
        ax.set_xticks(hs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("error rate on held-out problems")
    seeds = ", ".join(str(r["settings"]["seed"]) for r in reports)
    fig.suptitle(f"mean ± std over seeds {seeds}", fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m endo_rl.quickstart.summary", description=__doc__.splitlines()[0]
    )
    parser.add_argument("dirs", nargs="+", help="quickstart output directories")
    parser.add_argument("--plot", default=None, help="also draw the mean error vs H to this PNG")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        reports = load_reports(args.dirs)
        print(markdown_table(reports))
        if args.plot:
            plot_mean_error(reports, Path(args.plot))
    except UserError as err:
        print(f"summary: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
