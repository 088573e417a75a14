"""`endo-rl compare before.json after.json`: a table of accuracies and a grouped bar chart PNG."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = "example: endo-rl compare base.json trained.json --png compare.png (prints the table, writes the chart)"
    p.add_argument("before", help="report JSON of `endo-rl eval` before training")
    p.add_argument("after", help="report JSON after training")
    p.add_argument("--png", default=None, help="bar chart path (default: <after>.compare.png)")


def run(args: argparse.Namespace) -> int:
    from endo_rl.core.paths import check_writable
    from endo_rl.evaluation.reports import compare_reports, load_report

    before, after = load_report(args.before), load_report(args.after)
    png = check_writable(args.png or Path(args.after).with_suffix(".compare.png"), "--png")
    print(compare_reports(before, after, png))
    print(f"\nbar chart: {png}")
    return 0
