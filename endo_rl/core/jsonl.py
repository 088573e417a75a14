"""Reading JSONL files with errors that name the file and line."""

from __future__ import annotations

import json
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
