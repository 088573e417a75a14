"""Compare per-step metrics of runs (e.g. single process vs ZeRO-2 vs ZeRO-3 on recipes/debug/tiny_gpu.yaml).

    python launch/compare_metrics.py outputs/tiny_gpu/single outputs/tiny_gpu/zero2 outputs/tiny_gpu/zero3

Prints `loss` (or --metric) per step for each run and the largest relative difference to the first run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read(run_dir: str, metric: str) -> dict[int, float]:
    rows = [
        json.loads(line)
        for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return {r["step"]: r[metric] for r in rows if metric in r}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="output_dir of each run (the first is the baseline)")
    parser.add_argument("--metric", default="loss")
    args = parser.parse_args()
    series = [read(r, args.metric) for r in args.runs]
    steps = sorted(set.intersection(*(set(s) for s in series)))
    print("step  " + "  ".join(f"{Path(r).name:>14}" for r in args.runs))
    worst = 0.0
    for step in steps:
        values = [s[step] for s in series]
        worst = max([worst] + [abs(v - values[0]) / max(abs(values[0]), 1e-12) for v in values[1:]])
        print(f"{step:>4}  " + "  ".join(f"{v:>14.6g}" for v in values))
    print(f"largest relative difference to {args.runs[0]}: {worst:.3g} over {len(steps)} steps")


if __name__ == "__main__":
    main()
