"""Reading JSONL files with errors that name the file and line; resumable results files (settings row + rows)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from endo_rl.core.errors import UserError


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each non-empty line; a bad line is a UserError naming file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        line = text_line(Path(path).read_bytes(), err.start)
        raise UserError(f"{path}, line {line}: not UTF-8 text (byte {err.object[err.start]:#04x})") from err
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise UserError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def text_line(data: bytes, offset: int) -> int:
    """1-based line number of byte `offset` in `data`."""
    return data.count(b"\n", 0, offset) + 1


# ----- resumable results files ---------------------------------------------------------------------------
# A results file that survives a kill: a first row {"settings": {...}} (what the results depend on), then one
# row per finished item, each flushed as it is written. A run killed mid-write leaves a last line without its
# newline; a resumed run drops it (that item is done again). The evaluator's predictions and rm-eval's scores
# are such files.


def read_resumable(
    path: Path, tolerate_torn_tail: bool = False
) -> tuple[dict | None, list[tuple[int, dict]]]:
    """(settings row or None, [(line number, row)]) in file order; a bad line is a UserError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from err
    lines = text.split("\n")
    settings, rows = None, []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if tolerate_torn_tail and lineno == len(lines) and not text.endswith("\n"):
                print(
                    f"note: {path}, line {lineno} was cut off by an interrupted run; redoing it",
                    file=sys.stderr,
                )
                continue
            raise UserError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise UserError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}")
        if "settings" in row:
            settings = row["settings"]
        else:
            rows.append((lineno, row))
    return settings, rows


def check_same_settings(path: Path, saved: dict | None, wanted: dict) -> None:
    """A resumed run must have the settings of the run that wrote `path` (None: a file without settings)."""
    if saved is None:
        return
    diff = [
        f"{k}: file has {saved.get(k)!r}, this run {wanted.get(k)!r}"
        for k in dict.fromkeys([*wanted, *saved])
        if saved.get(k) != wanted.get(k)
    ]
    if diff:
        raise UserError(
            f"{path} was written with other settings ({'; '.join(diff)}); delete it or write to another path"
        )


class ResumableWriter:
    """Appends rows and flushes each one, so a killed process loses at most the row being written."""

    def __init__(self, path: Path, settings: dict):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = self.path.exists() and self.path.stat().st_size > 0
        if existing:  # drop a torn last line, so the next row starts on a line of its own
            data = self.path.read_bytes()
            if not data.endswith(b"\n"):
                self.path.write_bytes(data[: data.rfind(b"\n") + 1])
                existing = self.path.stat().st_size > 0
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        if not existing:
            self.append({"settings": settings})

    def append(self, row: dict) -> None:
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ResumableWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
