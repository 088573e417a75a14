"""Reward-model accuracy: RM-Bench's style matrix, per-subset and per-domain summaries, the promptable matrix.

For one RM-Bench prompt with chosen responses c_0..c_2 and rejected r_0..r_2 (style 0 concise, 1 detailed
plain, 2 detailed markdown), the win matrix is W[i][j] = 1 if score(c_i) > score(r_j) else 0; ties count as
wrong, as in RM-Bench's `compute_accuracy`. Averaged over prompts into M (3x3):

    hard   = mean of M[i][j], i < j   (chosen less formatted than rejected: style bias works against it)
    normal = mean of the diagonal
    easy   = mean of M[i][j], i > j
    accuracy = mean of all 9 cells = (hard + normal + easy) / 3

A pairwise judge has no per-response score; its W[i][j] is 1 when P(c_i preferred to r_j) > 0.5.
Everything here is plain Python on lists: no model, no tokenizer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Matrix = list[list[float]]

METHODS = ("endogenous", "loglik_norm", "verifier", "genrm_pointwise", "genrm_pairwise")
"""Method names, in table order (implemented in `rm_methods`)."""


def win_matrix(chosen_scores: Sequence[float], rejected_scores: Sequence[float]) -> Matrix:
    """W[i][j] = 1.0 if chosen i scores strictly higher than rejected j (ties and NaN are wrong)."""
    return [[1.0 if c > r else 0.0 for r in rejected_scores] for c in chosen_scores]


def pairwise_win_matrix(p_chosen: Sequence[Sequence[float]]) -> Matrix:
    """W[i][j] = 1.0 if the judge prefers chosen i over rejected j with probability > 0.5."""
    return [[1.0 if p > 0.5 else 0.0 for p in row] for row in p_chosen]


def item_wins(scores: dict) -> Matrix:
    """The win matrix of one item from its stored scores (pointwise `chosen`/`rejected` or pairwise `p_chosen`)."""
    if "p_chosen" in scores:
        return pairwise_win_matrix(scores["p_chosen"])
    return win_matrix(scores["chosen"], scores["rejected"])


def style_accuracies(wins: Sequence[Matrix]) -> dict:
    """RM-Bench's accuracies from per-item win matrices; easy/normal/hard only when every matrix is square
    and at least 2x2 (plain pairs give only `accuracy`). `stderr` is the standard error over items of the
    per-item mean, so small-sample numbers carry their uncertainty."""
    if not wins:
        return {"n_items": 0}
    n = len(wins)
    size = len(wins[0])
    per_item = [sum(map(sum, w)) / (len(w) * len(w[0])) for w in wins]
    accuracy = sum(per_item) / n
    var = sum((x - accuracy) ** 2 for x in per_item) / (n - 1) if n > 1 else float("nan")
    out = {"n_items": n, "accuracy": accuracy, "stderr": math.sqrt(var / n) if n > 1 else None}
    if size >= 2 and all(len(w) == size and all(len(row) == size for row in w) for w in wins):
        mean = [[sum(w[i][j] for w in wins) / n for j in range(size)] for i in range(size)]
        upper = [mean[i][j] for i in range(size) for j in range(size) if i < j]
        lower = [mean[i][j] for i in range(size) for j in range(size) if i > j]
        out.update(
            hard=sum(upper) / len(upper),
            normal=sum(mean[i][i] for i in range(size)) / size,
            easy=sum(lower) / len(lower),
            matrix=mean,
        )
    return out


def summarize(records: Sequence[dict], items_by_key: dict, method: str, score_field: str = "scores") -> dict:
    """Accuracies of one method per subset, per RM-Bench domain, and their unweighted mean over domains."""
    by_subset: dict[str, list[Matrix]] = {}
    by_domain: dict[str, list[Matrix]] = {}
    for rec in records:
        scores = rec[score_field].get(method)
        if scores is None:  # method skipped for this item (per-method limit)
            continue
        item = items_by_key[(rec["subset"], rec["prompt_index"])]
        wins = item_wins(scores)
        by_subset.setdefault(item.subset, []).append(wins)
        by_domain.setdefault(item.domain, []).append(wins)
    subsets = {s: style_accuracies(w) for s, w in sorted(by_subset.items())}
    domains = {d: style_accuracies(w) for d, w in sorted(by_domain.items())}
    accs = [d["accuracy"] for d in domains.values()]
    return {"subsets": subsets, "domains": domains, "average": sum(accs) / len(accs) if accs else None}


def promptable_matrix(records: Sequence[dict], items_by_key: dict, names: Sequence[str]) -> dict:
    """Accuracy of the endogenous reward under each named system prompt (rows) on each domain (columns)."""
    rows = {}
    for name in names:
        summary = summarize(records, items_by_key, name, score_field="system_prompts")
        rows[name] = {d: acc["accuracy"] for d, acc in summary["domains"].items()}
    domains = sorted({d for row in rows.values() for d in row})
    return {"system_prompts": list(names), "domains": domains, "accuracy": rows}


def endogenous_pairs(records: Sequence[dict], method: str = "endogenous") -> list[dict]:
    """Every compared (chosen, rejected) pair with its two rewards, for inspection with `endo-rl score --chat`."""
    pairs = []
    for rec in records:
        scores = rec["scores"].get(method)
        if scores is None:
            continue
        for i, c in enumerate(scores["chosen"]):
            for j, r in enumerate(scores["rejected"]):
                pairs.append(
                    {
                        "subset": rec["subset"],
                        "prompt_index": rec["prompt_index"],
                        "chosen_index": i,
                        "rejected_index": j,
                        "chosen_reward": c,
                        "rejected_reward": r,
                    }
                )
    return pairs


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def accuracy_table(results: dict[str, dict]) -> str:
    """Markdown table: one row per method; per subset the accuracy (easy/normal/hard when there are styles)."""
    subsets = sorted({s for r in results.values() for s in r["subsets"]})
    domains = sorted({d for r in results.values() for d in r["domains"]})
    head = [
        "method",
        *[f"{s} acc (easy/normal/hard) [n]" for s in subsets],
        *[f"{d} acc" for d in domains],
        "avg",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, res in results.items():
        cells = [method]
        for s in subsets:
            acc = res["subsets"].get(s, {"n_items": 0})
            if not acc["n_items"]:
                cells.append("-")
                continue
            styles = (
                f" ({_pct(acc['easy'])}/{_pct(acc['normal'])}/{_pct(acc['hard'])})" if "hard" in acc else ""
            )
            cells.append(f"{_pct(acc['accuracy'])}{styles} [{acc['n_items']}]")
        cells += [_pct(res["domains"].get(d, {}).get("accuracy")) for d in domains]
        cells.append(_pct(res["average"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
