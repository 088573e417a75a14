"""The quickstart's two figures: error vs horizon before/after RL, and RL learning curves (length, accuracy)."""

from __future__ import annotations

import re
from pathlib import Path

from endo_rl.run_log import read_metrics

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


def error_vs_horizon(report: dict, png_path: Path) -> Path:
    """Error (1 - accuracy) against H, before and after RL, one panel per decoding mode."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, mode in zip(axes, ("greedy", "sampled")):
        for tag, style in (("before", "o--"), ("after", "s-")):
            hs, errors = error_by_horizon(report[tag], mode)
            label = "before RL (imitation)" if tag == "before" else "after RL (endogenous reward)"
            ax.plot(hs, errors, style, label=label)
        ax.set_title(f"{mode} decoding", fontsize=10)
        ax.set_xlabel("H (reasoning steps)")
        ax.set_xticks(hs)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("error rate on held-out problems")
    axes[0].legend(fontsize=8)
    fig.suptitle("theory: imitation error grows like H^2, RL error like H", fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def learning_curves(metrics_path: Path, png_path: Path) -> Path | None:
    """Response length, endogenous reward, KL, and validation accuracy (mean and per set) against the RL step."""
    if not Path(metrics_path).exists():
        return None
    rows = read_metrics(metrics_path)
    plt = _pyplot()
    panels = [
        ("response_length", "response length (tokens)"),
        ("reward/endogenous", "endogenous reward"),
        ("kl", "KL to reference (per token)"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for ax, (key, title) in zip(axes, panels):
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("RL step")
    ax = axes[3]
    names = sorted(
        {k for r in rows for k in r if k.startswith("eval/curve/") and k != "eval/curve/mean/accuracy"}
    )
    for name in names:
        points = [(r["step"], r[name]) for r in rows if r.get(name) is not None]
        ax.plot(*zip(*points), lw=0.8, alpha=0.6, label=name.split("/")[2])
    points = [
        (r["step"], r["eval/curve/mean/accuracy"])
        for r in rows
        if r.get("eval/curve/mean/accuracy") is not None
    ]
    if points:
        ax.plot(*zip(*points), "k-", lw=2, label="mean")
    ax.set_title("validation accuracy", fontsize=10)
    ax.set_xlabel("RL step")
    ax.set_ylim(0, 1)
    if names:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
