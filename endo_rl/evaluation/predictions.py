"""The predictions JSONL: every completion, appended as soon as it is generated, so a killed eval resumes.

Rows: `{"benchmark", "index", "sample", "completion", "n_tokens", "truncated"}`; `index` is the row number in
the benchmark file. A problem whose prompt is over the evaluation's prompt limit gets a row with an empty
completion and `"too_long": true` (never generated, graded wrong with status `too_long`). An eval run writes a first row `{"settings": {...}}` with the decoding settings, and a
resumed run refuses a file made with different ones. Hand-written files for `--predictions` need only
`benchmark`, `index` and `completion`.

A run killed mid-write leaves a last line without its newline; on resume that torn line is dropped (its
completion is generated again). Any other bad line is an error naming the file and line.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from endo_rl.core.errors import UserError


@dataclass(frozen=True)
class Prediction:
    benchmark: str
    index: int
    sample: int
    completion: str
    n_tokens: int | None = None
    truncated: bool | None = None
    too_long: bool = False
    """The prompt was over the prompt limit: nothing was generated; graded wrong (status too_long)."""

    def key(self) -> tuple[str, int, int]:
        return self.benchmark, self.index, self.sample

    def to_json(self) -> str:
        row = {
            "benchmark": self.benchmark,
            "index": self.index,
            "sample": self.sample,
            "completion": self.completion,
            "n_tokens": self.n_tokens,
            "truncated": self.truncated,
        }
        if self.too_long:
            row["too_long"] = True
        return json.dumps(row, ensure_ascii=False)


def _parse_row(row: dict, where: str, samples_seen: dict[tuple[str, int], int]) -> Prediction:
    missing = [k for k in ("benchmark", "index", "completion") if k not in row]
    if missing:
        raise UserError(f"{where}: missing field(s) {', '.join(missing)} (need benchmark, index, completion)")
    index, completion = row["index"], row["completion"]
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise UserError(f"{where}: index must be a non-negative integer, got {index!r}")
    if not isinstance(completion, str):
        raise UserError(f"{where}: completion must be a string, got {type(completion).__name__}")
    key = (str(row["benchmark"]), index)
    sample = row.get("sample")
    if sample is None:  # hand-written files: repeated rows of one problem are its samples, in file order
        sample = samples_seen.get(key, 0)
    samples_seen[key] = max(samples_seen.get(key, 0), sample + 1)
    too_long = row.get("too_long", False) is True
    return Prediction(key[0], index, sample, completion, row.get("n_tokens"), row.get("truncated"), too_long)


def read_predictions(
    path: Path, tolerate_torn_tail: bool = False
) -> tuple[dict | None, list[tuple[int, Prediction]]]:
    """(settings row or None, [(line number, prediction)]) in file order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read predictions file {path}: {err.strerror}") from err
    lines = text.split("\n")
    settings, out, seen = None, [], {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if tolerate_torn_tail and lineno == len(lines) and not text.endswith("\n"):
                print(
                    f"note: {path}, line {lineno} was cut off by an interrupted run; regenerating it",
                    file=sys.stderr,
                )
                continue
            raise UserError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise UserError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}")
        if "settings" in row:
            settings = row["settings"]
            continue
        out.append((lineno, _parse_row(row, f"{path}, line {lineno}", seen)))
    return settings, out


class PredictionWriter:
    """Appends rows and flushes each one, so a killed process loses at most the row being written."""

    def __init__(self, path: Path, settings: dict):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = self.path.exists() and self.path.stat().st_size > 0
        if existing:
            self._drop_torn_tail()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        if not existing:
            self._write(json.dumps({"settings": settings}))

    def _drop_torn_tail(self) -> None:
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])

    def _write(self, line: str) -> None:
        self._fh.write(line + "\n")
        self._fh.flush()

    def append(self, prediction: Prediction) -> None:
        self._write(prediction.to_json())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_resume_settings(path: Path, saved: dict | None, wanted: dict) -> None:
    """A resumed run must decode exactly as the run that wrote the file did."""
    if saved is None:
        return
    diff = [f"{k}: file has {saved.get(k)!r}, this run {v!r}" for k, v in wanted.items() if saved.get(k) != v]
    if diff:
        raise UserError(
            f"predictions file {path} was written with other settings ({'; '.join(diff)}); "
            "delete it or write to another path"
        )
