"""The quickstart's two figures: error vs horizon before/after RL, and RL learning curves (length, accuracy)."""

from __future__ import annotations

import math
import re
from pathlib import Path

from endo_rl.rl.run_log import read_metrics

_SET = re.compile(r"^H(\d+)_(greedy|sampled)$")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def error_by_horizon(accuracy: dict[str, float], mode: str) -> tuple[list[int], list[float]]:
    """(horizons, error = 1 - accuracy) of one decoding mode, sorted by horizon."""
    points = sorted(
        (int(m[1]), 1 - acc) for name, acc in accuracy.items() if (m := _SET.match(name)) and m[2] == mode
    )
    return [h for h, _ in points], [e for _, e in points]


def fit_exponent(horizons: list[int], errors: list[float]) -> float | None:
    """p of the least-squares fit log(error) = p log(H) + c; None when an error is 0 or there are < 2 points."""
    if len(horizons) < 2 or min(errors) <= 0:
        return None
    xs, ys = [math.log(h) for h in horizons], [math.log(e) for e in errors]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def error_exponents(report: dict) -> dict[str, float | None]:
    """Fitted growth exponent p (error ~ H^p) per stage and decoding mode, e.g. `before_sampled`."""
    return {
        f"{tag}_{mode}": fit_exponent(*error_by_horizon(report[tag], mode))
        for tag in ("before", "after")
        for mode in ("greedy", "sampled")
    }


def error_vs_horizon(report: dict, png_path: Path) -> Path:
    """Error (1 - accuracy) against H, before and after RL, one panel per decoding mode; legend: fitted H^p."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    exponents = error_exponents(report)
    for ax, mode in zip(axes, ("greedy", "sampled")):
        for tag, style in (("before", "o--"), ("after", "s-")):
            hs, errors = error_by_horizon(report[tag], mode)
            label = "before RL (imitation)" if tag == "before" else "after RL (endogenous reward)"
            p = exponents[f"{tag}_{mode}"]
            ax.plot(hs, errors, style, label=label + ("" if p is None else f", fit ~H^{p:.1f}"))
        ax.set_title(f"{mode} decoding", fontsize=10)
        ax.set_xlabel("H (reasoning steps)")
        ax.set_xticks(hs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("error rate on held-out problems")
    fig.suptitle(
        "error vs horizon (theory's bounds: imitation ~H^2, RL with the endogenous reward ~H)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what there is)."""
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out


def _curve(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [s for s, _ in points], [v for _, v in points]


def learning_curves(metrics_path: Path, png_path: Path) -> Path | None:
    """Response length, endogenous reward, KL (raw and a 10-step moving average) and validation accuracy
    (mean over horizons per decoding mode; each set faint) against the RL step."""
    if not Path(metrics_path).exists():
        return None
    rows = read_metrics(metrics_path)
    plt = _pyplot()
    panels = [
        ("response_length", "response length (tokens)"),
        ("reward/endogenous", "endogenous reward (sequence)"),
        ("kl", "KL to reference (per token)"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for ax, (key, title) in zip(axes, panels):
        steps, values = _curve(rows, key)
        if steps:
            ax.plot(steps, values, color="C0", alpha=0.3, lw=0.8)
            ax.plot(steps, _smooth(values, 10), color="C0", lw=1.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("RL step")
    ax = axes[3]
    sets = sorted({k.split("/")[2] for r in rows for k in r if k.startswith("eval/curve/H")})
    for mode, color in (("greedy", "C2"), ("sampled", "C1")):
        names = [n for n in sets if n.endswith(mode)]
        for name in names:
            ax.plot(*_curve(rows, f"eval/curve/{name}/accuracy"), color=color, lw=0.6, alpha=0.35)
        curves = [_curve(rows, f"eval/curve/{name}/accuracy") for name in names]
        if curves and curves[0][0]:
            mean = [sum(c[1][i] for c in curves) / len(curves) for i in range(len(curves[0][1]))]
            ax.plot(curves[0][0], mean, color=color, lw=2, marker=".", label=f"{mode} (mean over H)")
    ax.set_title("validation accuracy (faint: each H)", fontsize=10)
    ax.set_xlabel("RL step")
    if sets:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
