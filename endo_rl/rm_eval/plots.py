"""PNG charts for `endo-rl rm-eval`: accuracy per method and subset, and the promptable-reward heat map."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def accuracy_bars(results: dict[str, dict], out: Path, title: str) -> None:
    """Grouped bars: one group per subset (and the domain average), one bar per method."""
    plt = _pyplot()
    subsets = sorted({s for r in results.values() for s in r["subsets"]})
    groups = [*subsets, "average"]
    width = 0.8 / max(1, len(results))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups) + 2), 4.5))
    for k, (method, res) in enumerate(results.items()):
        values = [res["subsets"].get(s, {}).get("accuracy") for s in subsets] + [res["average"]]
        xs = [g + (k - (len(results) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [100 * v if v is not None else 0.0 for v in values], width, label=method)
    ax.axhline(50, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("accuracy (%)  [ties count as wrong]")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=min(5, len(results)), loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def promptable_heatmap(matrix: dict, out: Path, title: str) -> None:
    """Rows: system prompts; columns: domains; cell: accuracy of the endogenous reward (%)."""
    plt = _pyplot()
    names, domains = matrix["system_prompts"], matrix["domains"]
    values = [[100 * matrix["accuracy"][n].get(d, float("nan")) for d in domains] for n in names]
    fig, ax = plt.subplots(figsize=(1.4 * len(domains) + 3, 0.7 * len(names) + 2))
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(domains)), domains)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("domain of the pairs")
    ax.set_ylabel("system prompt")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="white" if v < 60 else "black")
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
