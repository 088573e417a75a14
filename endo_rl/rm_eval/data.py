"""Preference data for reward-model evaluation: RM-Bench JSON files and plain JSONL pairs.

RM-Bench (Liu et al. 2024, arXiv 2410.16184) files hold a JSON list; each item has `prompt`, `chosen[3]` and
`rejected[3]`, the three entries being the same answer in three styles (0 concise, 1 detailed plain text,
2 detailed markdown). Its files are named `{subset}_filtered.json` with subsets chat, code, math,
safety-refuse and safety-response; RM-Bench reports the two safety subsets together as the domain "safety".

JSONL pair files hold one `{"prompt", "chosen", "rejected"[, "domain"]}` object per line; an item is then one
pair (a 1x1 "style matrix"), and its subset is its `domain` (or the file's stem when there is none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from endo_rl.core.errors import UserError

RMBENCH_SUFFIX = "_filtered"
STYLES = ("concise", "detailed_plain", "detailed_markdown")


@dataclass(frozen=True)
class Item:
    """One prompt with its chosen and rejected responses (3 styles each for RM-Bench, 1 each for pairs)."""

    subset: str
    index: int
    """Position of the item in its data file (0-based; the line number minus 1 for JSONL)."""
    prompt: str
    chosen: tuple[str, ...]
    rejected: tuple[str, ...]

    @property
    def key(self) -> tuple[str, int]:
        return (self.subset, self.index)

    @property
    def domain(self) -> str:
        return rmbench_domain(self.subset)


def rmbench_domain(subset: str) -> str:
    """RM-Bench's reporting domain: safety-refuse and safety-response are both "safety"."""
    return "safety" if subset.startswith("safety") else subset


def _subset_name(path: Path) -> str:
    stem = path.stem
    return stem[: -len(RMBENCH_SUFFIX)] if stem.endswith(RMBENCH_SUFFIX) else stem


def _strings(value, what: str) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise UserError(f"{what} must be a non-empty string or a list of non-empty strings")
    return tuple(values)


def _item(obj, subset: str, index: int, where: str) -> Item:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in obj]
    if missing:
        raise UserError(f"{where}: missing key(s) {missing}")
    if not isinstance(obj["prompt"], str) or not obj["prompt"]:
        raise UserError(f"{where}: 'prompt' must be a non-empty string")
    chosen = _strings(obj["chosen"], f"{where}: 'chosen'")
    rejected = _strings(obj["rejected"], f"{where}: 'rejected'")
    if len(chosen) != len(rejected):
        raise UserError(f"{where}: {len(chosen)} chosen but {len(rejected)} rejected responses")
    return Item(subset=subset, index=index, prompt=obj["prompt"], chosen=chosen, rejected=rejected)


def load_rmbench_json(path: Path) -> list[Item]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of items, got {type(data).__name__}")
    subset = _subset_name(path)
    return [_item(obj, subset, i, f"{path}: item {i}") for i, obj in enumerate(data)]


def load_pairs_jsonl(path: Path) -> list[Item]:
    items = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{where}: not valid JSON ({err.msg})") from err
        domain = obj.get("domain") if isinstance(obj, dict) else None
        if domain is not None and (not isinstance(domain, str) or not domain):
            raise UserError(f"{where}: 'domain' must be a non-empty string")
        items.append(_item(obj, domain or _subset_name(path), lineno - 1, where))
    if not items:
        raise UserError(f"{path}: no pairs in the file")
    return items


def _load_file(path: Path) -> list[Item]:
    if path.suffix == ".jsonl":
        return load_pairs_jsonl(path)
    if path.suffix == ".json":
        return load_rmbench_json(path)
    raise UserError(f"data file {path} must end in .json (RM-Bench) or .jsonl (pairs)")


def load_items(data: str, subsets: list[str] | None = None, limit: int | None = None) -> list[Item]:
    """Items from a file or a directory of files, filtered to `subsets`, at most `limit` per subset."""
    path = Path(data)
    if path.is_dir():
        files = sorted([*path.glob("*.json"), *path.glob("*.jsonl")])
        if subsets is not None:  # only read the files that can hold a requested subset
            files = [f for f in files if f.suffix == ".jsonl" or _subset_name(f) in subsets] or files
        if not files:
            raise UserError(f"data directory {data} holds no .json or .jsonl files")
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"data path {data} does not exist")
    items = [item for f in files for item in _load_file(f)]
    available = sorted({item.subset for item in items})
    if subsets is not None:
        unknown = [s for s in subsets if s not in available]
        if unknown:
            raise UserError(f"unknown subset(s) {unknown} in {data}; available: {available}")
        items = [item for item in items if item.subset in subsets]
    if limit is not None:
        seen: dict[str, int] = {}
        kept = []
        for item in items:
            seen[item.subset] = seen.get(item.subset, 0) + 1
            if seen[item.subset] <= limit:
                kept.append(item)
        items = kept
    return items
