"""The predictions JSONL: every completion, appended as soon as it is generated, so a killed eval resumes.

Rows: `{"benchmark", "index", "sample", "completion", "n_tokens", "truncated"}`; `index` is the row number in
the benchmark file. An eval run writes a first row `{"settings": {...}}` with the decoding settings, and a
resumed run refuses a file made with different ones. Hand-written files for `--predictions` need only
`benchmark`, `index` and `completion`.

The file is a resumable results file (`endo_rl.core.jsonl`): a run killed mid-write leaves a last line without
its newline; on resume that torn line is dropped (its completion is generated again). Any other bad line is an
error naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from endo_rl.core.errors import UserError
from endo_rl.core.jsonl import ResumableWriter, check_same_settings, read_resumable


@dataclass(frozen=True)
class Prediction:
    benchmark: str
    index: int
    sample: int
    completion: str
    n_tokens: int | None = None
    truncated: bool | None = None

    def key(self) -> tuple[str, int, int]:
        return self.benchmark, self.index, self.sample

    def to_dict(self) -> dict:
        return {
            "benchmark": self.benchmark,
            "index": self.index,
            "sample": self.sample,
            "completion": self.completion,
            "n_tokens": self.n_tokens,
            "truncated": self.truncated,
        }


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
    elif not isinstance(sample, int) or isinstance(sample, bool) or sample < 0:
        raise UserError(f"{where}: sample must be a non-negative integer, got {sample!r}")
    samples_seen[key] = max(samples_seen.get(key, 0), sample + 1)
    return Prediction(key[0], index, sample, completion, row.get("n_tokens"), row.get("truncated"))


def read_predictions(
    path: Path, tolerate_torn_tail: bool = False
) -> tuple[dict | None, list[tuple[int, Prediction]]]:
    """(settings row or None, [(line number, prediction)]) in file order."""
    settings, rows = read_resumable(path, tolerate_torn_tail)
    seen: dict[tuple[str, int], int] = {}
    first_line: dict[tuple[str, int, int], int] = {}
    out = []
    for lineno, row in rows:
        prediction = _parse_row(row, f"{path}, line {lineno}", seen)
        if prediction.key() in first_line:  # would be counted as one more sample of that problem
            raise UserError(
                f"{path}, line {lineno}: repeats benchmark {prediction.benchmark}, index {prediction.index}, "
                f"sample {prediction.sample} of line {first_line[prediction.key()]}"
            )
        first_line[prediction.key()] = lineno
        out.append((lineno, prediction))
    return settings, out


class PredictionWriter:
    """Appends each prediction as soon as it exists (first row: the decoding settings)."""

    def __init__(self, path: Path, settings: dict):
        self._file = ResumableWriter(path, settings)

    def append(self, prediction: Prediction) -> None:
        self._file.append(prediction.to_dict())

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


def check_resume_settings(path: Path, saved: dict | None, wanted: dict) -> None:
    """A resumed run must decode exactly as the run that wrote the file did."""
    check_same_settings(path, saved, wanted)
