"""Running the reward-model evaluation: score every item with every method, resumably, then build the report.

Per-item scores are appended to the results file `<out stem>.jsonl` as they are produced (a resumable results
file, `endo_rl.core.jsonl`: first row the settings); a restarted run with the same settings skips the items
already there. The report is built from that file at the end and written with its plots:
`<out>`, `<out stem>.png` (accuracy bars) and, with system prompts, `<out stem>_promptable.png` (heat map).
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from endo_rl.core.errors import UserError
from endo_rl.core.jsonl import ResumableWriter, check_same_settings, read_resumable
from endo_rl.rm_eval import metrics as rm_metrics
from endo_rl.rm_eval.data import Item

RESULTS_VERSION = 1
"""Bumped when the stored per-item scores change meaning (templates, score definitions)."""

NO_LIMIT = 1 << 62


@dataclass
class RMEvalSettings:
    model: str
    """Model directory, .gguf file, or Hub id."""
    data: str
    """RM-Bench .json, pairs .jsonl, or a directory of them."""
    out: str
    """Report JSON path; per-item results go to the same stem .jsonl."""
    methods: list[str] = field(default_factory=lambda: list(rm_metrics.METHODS))
    """Methods to run."""
    gguf_file: str | None = None
    """GGUF file name inside `model` (a directory)."""
    subsets: list[str] | None = None
    """Subsets to evaluate (None: all in `data`)."""
    limit: int | None = None
    """At most N items per subset."""
    method_limits: dict[str, int] = field(default_factory=dict)
    """METHOD -> run it on the first N items of each subset only."""
    system: str | None = None
    """System prompt for every method (judge prompts included)."""
    system_prompts: dict[str, str] = field(default_factory=dict)
    """name -> system prompt: endogenous accuracy matrix, system prompt x domain."""
    alpha: float = 1.0
    """Reward scale alpha > 0."""
    batch_size: int = 8
    """Sequences per forward pass."""
    dtype: str = "auto"
    """auto | float32 | bfloat16 | float16 | float64."""
    device: str | None = None
    """cpu | cuda (None: cuda when available)."""
    progress: bool = True
    """Progress bar."""

    def header(self) -> dict:
        """What the stored scores depend on; a resumed run must match it."""
        return {
            "version": RESULTS_VERSION,
            "model": self.model,
            "gguf_file": self.gguf_file,
            "system": self.system,
            "methods": self.methods,
            "method_limits": self.method_limits,
            "alpha": self.alpha,
            "dtype": self.dtype,
            "system_prompts": self.system_prompts,
        }


def load_system_prompts(path: str | None) -> dict[str, str]:
    """name -> system prompt from a YAML or JSON file (None: none)."""
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


def read_results(path: Path, expected: dict) -> dict[tuple[str, int], dict]:
    """Records already in the results file, by item key; an error when it was made with other settings."""
    if not path.exists() or path.stat().st_size == 0:
        return {}
    saved, rows = read_resumable(path, tolerate_torn_tail=True)
    if saved is None:
        raise UserError(
            f"{path}: not an rm-eval results file (no settings row); delete it or choose another --out"
        )
    check_same_settings(path, saved, expected)
    return {(rec["subset"], rec["prompt_index"]): rec for _, rec in rows}


def item_ranks(items: list[Item]) -> list[int]:
    """Each item's position within its subset (for method limits)."""
    ranks, seen = [], {}
    for it in items:
        ranks.append(seen.get(it.subset, 0))
        seen[it.subset] = ranks[-1] + 1
    return ranks


def run(settings: RMEvalSettings) -> dict:
    """Score what is not in the results file yet, write the report and plots; returns the report."""
    from endo_rl.rm_eval import data as rm_data
    from endo_rl.rm_eval import plots as rm_plots

    items = rm_data.load_items(settings.data, settings.subsets, settings.limit)
    out = Path(settings.out)
    results_path = out.with_suffix(".jsonl")
    header = settings.header()
    done = read_results(results_path, header)
    resumed = sum(it.key in done for it in items)
    start = time.time()
    scored = score_pending(settings, items, done, header, results_path)
    report = rm_report(settings, items, done, header)
    report.update(items_scored_now=scored, items_resumed=resumed, wall_time_s=round(time.time() - start, 1))
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    name = Path(settings.model).name
    rm_plots.accuracy_bars(report["results"], out.with_suffix(".png"), f"{name}: reward-model accuracy")
    if "promptable" in report:
        rm_plots.promptable_heatmap(
            report["promptable"],
            out.with_name(out.stem + "_promptable.png"),
            f"{name}: endogenous reward, system prompt x domain",
        )
    return report


def score_pending(settings: RMEvalSettings, items: list[Item], done: dict, header: dict, path: Path) -> int:
    """Score the items not in `done`, appending each record to `path` as soon as its group is scored."""
    from tqdm.auto import tqdm

    from endo_rl.core import models
    from endo_rl.reward.reference import ReferenceModel
    from endo_rl.rm_eval.judges import Judge

    ranks = item_ranks(items)
    pending = [k for k, it in enumerate(items) if it.key not in done]
    if not pending:
        return 0
    s = settings
    device = models.check_device(s.device or models.default_device(), "--device")
    tokenizer = models.load_tokenizer(s.model, s.gguf_file)
    model = models.load_causal_lm(s.model, s.gguf_file, s.dtype, device)
    models.check_vocab(model, tokenizer)
    judge = Judge(ReferenceModel(model, tokenizer, alpha=s.alpha, batch_size=s.batch_size), s.system)
    with (
        ResumableWriter(path, header) as results,
        tqdm(total=len(pending), desc="rm-eval", unit="item", disable=not s.progress) as bar,
    ):
        for group in groups(pending, items, s.batch_size):
            records = score_group(
                judge,
                [items[k] for k in group],
                [ranks[k] for k in group],
                s.methods,
                header["method_limits"],
                header["system_prompts"],
            )
            for rec in records:
                results.append(rec)
                done[(rec["subset"], rec["prompt_index"])] = rec
            bar.update(len(group))
    return len(pending)


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


def rm_report(settings: RMEvalSettings, items: list[Item], done: dict, header: dict) -> dict:
    """The report from the stored records: accuracy per method (and per style), pairs, promptable matrix."""
    by_key = {it.key: it for it in items}
    records = [done[it.key] for it in items]
    results = {m: rm_metrics.summarize(records, by_key, m) for m in settings.methods}
    report = {
        "settings": header,
        "data": settings.data,
        "subsets": sorted({it.subset for it in items}),
        "limit": settings.limit,
        "n_items": len(items),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "ties": "a tie (equal scores, or a pairwise probability of exactly 0.5) counts as wrong, as in RM-Bench",
        "styles": ["concise", "detailed_plain", "detailed_markdown"],
        "results": results,
        "table": rm_metrics.accuracy_table(results),
        "pairs": rm_metrics.endogenous_pairs(records),
    }
    if header["system_prompts"]:
        report["promptable"] = rm_metrics.promptable_matrix(records, by_key, list(header["system_prompts"]))
    return report
