"""Before/after comparison of two eval reports: a text table and a grouped bar chart.

Both reports must come from the same template, decoding and max new tokens, or the difference measures the
harness, not the training (the template alone moves MATH500 by up to 18 points); a mismatch is printed as a
warning under the table rather than refused, since comparing, say, two templates is sometimes the point.
"""

from __future__ import annotations

import json
from pathlib import Path

from endo_rl.core.errors import UserError

_MUST_MATCH = ("template", "max_new_tokens", "temperature", "top_p", "n_samples", "limit", "extract")


def load_report(path: str | Path) -> dict:
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"cannot read report {path}: {err.strerror}") from err
    except json.JSONDecodeError as err:
        raise UserError(f"report {path} is not valid JSON (line {err.lineno}: {err.msg})") from err
    if not isinstance(report, dict) or not isinstance(report.get("benchmarks"), dict):
        raise UserError(f"report {path} has no 'benchmarks' section: is it an `endo-rl eval` report?")
    return report


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _row(name: str, before: dict | None, after: dict | None) -> str:
    b = before["accuracy"] if before else None
    a = after["accuracy"] if after else None
    delta = "-" if a is None or b is None else f"{100 * (a - b):+.1f}"
    se = lambda m: "" if not m or m.get("stderr") is None else f" ±{100 * m['stderr']:.1f}"  # noqa: E731
    n = (after or before)["n"]
    return f"{name:<15} {_pct(b) + se(before):>13} {_pct(a) + se(after):>13} {delta:>7} {n:>5}"


def comparison_table(before: dict, after: dict) -> str:
    names = list(dict.fromkeys([*before["benchmarks"], *after["benchmarks"]]))
    lines = [f"{'benchmark':<15} {'before %':>13} {'after %':>13} {'delta':>7} {'n':>5}"]
    lines += [_row(n, before["benchmarks"].get(n), after["benchmarks"].get(n)) for n in names]
    common = [n for n in names if n in before["benchmarks"] and n in after["benchmarks"]]
    if len(common) > 1:
        avg = lambda r: {  # noqa: E731
            "accuracy": sum(r["benchmarks"][n]["accuracy"] for n in common) / len(common),
            "stderr": None,
            "n": sum(r["benchmarks"][n]["n"] for n in common),
        }
        lines.append(_row("average", avg(before), avg(after)))
    sb, sa = before.get("settings", {}), after.get("settings", {})
    sb, sa = {"extract": "boxed", **sb}, {"extract": "boxed", **sa}  # reports from before --extract existed
    lines.append(f"answer extraction: before {sb['extract']}, after {sa['extract']}")
    lines += [
        f"warning: {k} differs: before {sb.get(k)!r}, after {sa.get(k)!r}"
        for k in _MUST_MATCH
        if sb.get(k) != sa.get(k)
    ]
    return "\n".join(lines)


def bar_chart(
    before: dict, after: dict, png_path: str | Path, labels: tuple[str, str] = ("before", "after")
) -> None:
    """Grouped bars (before, after) per benchmark with standard-error whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in before["benchmarks"] if n in after["benchmarks"]]
    if not names:
        raise UserError("the two reports share no benchmark")
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(names) + 1), 3.5))
    width = 0.38
    for shift, report, label in ((-width / 2, before, labels[0]), (width / 2, after, labels[1])):
        acc = [100 * report["benchmarks"][n]["accuracy"] for n in names]
        err = [100 * (report["benchmarks"][n].get("stderr") or 0) for n in names]
        ax.bar([i + shift for i in range(len(names))], acc, width, yerr=err, capsize=3, label=label)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(
        bottom=0, top=max(ax.get_ylim()[1], 5.0)
    )  # all-zero accuracies: a 0-5 % axis, not -0.04..0.04
    ax.legend()
    fig.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def compare_reports(before: dict, after: dict, png_path: str | Path | None = None) -> str:
    """The comparison table as text; also writes the bar chart when `png_path` is given."""
    if png_path is not None:
        bar_chart(before, after, png_path)
    return comparison_table(before, after)
