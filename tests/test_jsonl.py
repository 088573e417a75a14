"""Resumable results files (`core.jsonl`), shared by the evaluator's predictions and rm-eval's scores."""

from __future__ import annotations

import pytest

from endo_rl.core.errors import UserError
from endo_rl.core.jsonl import ResumableWriter, check_same_settings, read_resumable


def test_a_torn_last_row_is_dropped_and_the_next_row_starts_on_its_own_line(tmp_path):
    path = tmp_path / "results.jsonl"
    with ResumableWriter(path, {"model": "m"}) as w:
        w.append({"i": 0})
        w.append({"i": 1, "text": "é"})
    with open(path, "a", encoding="utf-8") as fh:  # a kill in the middle of writing row 2
        fh.write('{"i": 2, "te')
    settings, rows = read_resumable(path, tolerate_torn_tail=True)
    assert settings == {"model": "m"} and [r for _, r in rows] == [{"i": 0}, {"i": 1, "text": "é"}]
    with pytest.raises(UserError, match=r"results.jsonl, line 4: not valid JSON"):
        read_resumable(path)  # without tolerance (a file given by hand), the torn row is an error
    with ResumableWriter(path, {"model": "m"}) as w:  # resume: no second settings row, row 2 redone
        w.append({"i": 2})
    assert path.read_text(encoding="utf-8").splitlines() == [
        '{"settings": {"model": "m"}}',
        '{"i": 0}',
        '{"i": 1, "text": "é"}',
        '{"i": 2}',
    ]


def test_a_bad_row_in_the_middle_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"settings": {}}\n{"i": 0\n{"i": 1}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"r.jsonl, line 2: not valid JSON"):
        read_resumable(path, tolerate_torn_tail=True)
    path.write_text('{"settings": {}}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"r.jsonl, line 2: expected a JSON object, got list"):
        read_resumable(path)


def test_other_settings_are_named_key_by_key():
    check_same_settings("f.jsonl", None, {"a": 1})  # a file without settings (hand-written): nothing to check
    check_same_settings("f.jsonl", {"a": 1, "b": [2]}, {"b": [2], "a": 1})
    with pytest.raises(UserError, match=r"^f.jsonl was written with other settings \(a: file has 1, this run 2; "
                       r"c: file has None, this run 3\); delete it"):  # fmt: skip
        check_same_settings("f.jsonl", {"a": 1, "b": 0}, {"a": 2, "b": 0, "c": 3})
