"""Math benchmarks: load the problems and find each one's gold answer.

A local data directory holds `<name>/test.jsonl` (the layout of ../shared/benchmarks, see its SOURCES.md).
Each benchmark keeps its gold answer somewhere else, which is where harnesses go wrong:

| benchmark | rows | gold |
|---|---|---|
| math500 | 500 | `answer` |
| minerva_math | 272 | last `\\boxed{}` of `solution` |
| olympiadbench | 675 | `final_answer`, a list (stored as a Python-literal string); several answers are joined by ", " |
| aime24 | 30 | `answer` ("025" and "25" both grade as 25) |
| amc23 | 40 | `answer`, a float such as 27.0 |
| gsm8k | 1319 | the text after `####` of `answer`, thousands separators removed |
| math | 5000 | last `\\boxed{}` of `solution` |

Gold answers are read as the table says and then, for the few listed in endo_rl.evaluation.gold_overrides,
replaced by a hand-written gold (each with its reason); `Problem.raw_gold` keeps the original. General fixes
(scientific notation, trailing punctuation, ...) happen at grading time, for gold and answer alike
(endo_rl.evaluation.answer_norm).

`Problem.index` is the row number in the benchmark file: predictions and reports refer to problems by it.
Without a data directory the Hub ids in HUB_SOURCES are used (needs `datasets` and a network; their row order
is the Hub's, so indices are only comparable between runs on the same source).
"""

from __future__ import annotations

import ast
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from endo_rl.core.answers import last_boxed
from endo_rl.core.errors import UserError
from endo_rl.core.jsonl import read_jsonl
from endo_rl.evaluation.gold_overrides import override_gold


@dataclass(frozen=True)
class Problem:
    index: int
    """Row number in the benchmark file (0-based)."""
    question: str
    gold: str
    """The gold answer as LaTeX/text, without `$` delimiters or `\\boxed{}` (after any hand override)."""
    raw_gold: str = ""
    """The gold as the benchmark file has it, before a hand override ("" when the same as `gold`)."""


def _strip_dollars(text: str) -> str:
    text = text.strip()
    while len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text[1:-1].strip()
    return text


def _gold_field(key: str) -> Callable[[dict], str | None]:
    def gold(row: dict) -> str | None:
        value = row.get(key)
        return None if value is None else _strip_dollars(str(value))

    return gold


def _gold_boxed(row: dict) -> str | None:
    return last_boxed(row.get("solution") or "") or (_gold_field("answer")(row) if "answer" in row else None)


def _gold_amc(row: dict) -> str | None:
    value = row.get("answer")
    if value is None:
        return None
    number = float(value)  # "27.0" and 27.0 both appear; all AMC answers are integers
    return str(int(number)) if number.is_integer() else str(number)


def _gold_gsm8k(row: dict) -> str | None:
    answer = str(row.get("answer", ""))
    if "####" not in answer:
        return None
    return answer.split("####")[-1].strip().replace(",", "")


def _gold_olympiad(row: dict) -> str | None:
    value = row.get("final_answer")
    if isinstance(value, str):  # the Qwen2.5-Math copy stores the list as a Python literal
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            value = [value]
    if not value:
        return None
    # "$69$,$84$" inside one element is also several answers: strip the inner dollars
    parts = [_strip_dollars(p).replace("$", "") for p in value]
    return ", ".join(p for p in parts if p) or None


@dataclass(frozen=True)
class _Spec:
    question_keys: tuple[str, ...]
    gold: Callable[[dict], str | None]
    hub: tuple[str, str | None, str]
    """(dataset id, config, split) for users online; unverified offline, field names mapped by question_keys."""


SPECS: dict[str, _Spec] = {
    "math500": _Spec(("problem",), _gold_field("answer"), ("HuggingFaceH4/MATH-500", None, "test")),
    "minerva_math": _Spec(("problem", "question"), _gold_boxed, ("math-ai/minervamath", None, "test")),
    "olympiadbench": _Spec(
        ("question",), _gold_olympiad, ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train")
    ),
    "aime24": _Spec(
        ("problem", "question"), _gold_field("answer"), ("HuggingFaceH4/aime_2024", None, "train")
    ),
    "amc23": _Spec(("problem", "question"), _gold_amc, ("math-ai/amc23", None, "test")),
    "gsm8k": _Spec(("question",), _gold_gsm8k, ("openai/gsm8k", "main", "test")),
    "math": _Spec(("problem",), _gold_boxed, ("DigitalLearningGmbH/MATH-lighteval", None, "test")),
}
ROUNDED_GOLDS = ("minerva_math",)
"""Benchmarks whose golds are rounded measurements (physics to a few significant figures): an answer that rounds
to the gold is correct (endo_rl.evaluation.compare)."""
PAPER_BENCHMARKS = ("math500", "minerva_math", "olympiadbench", "aime24", "amc23")


def parse_names(text: str) -> list[str]:
    """'math500,gsm8k' -> ['math500', 'gsm8k']; an unknown name is a UserError listing the valid ones."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(f"no benchmark named; valid names: {', '.join(SPECS)}")
    for name in names:
        check_name(name)
    if len(set(names)) != len(names):
        raise UserError(f"benchmark listed twice in {text!r}")
    return names


def check_name(name: str) -> None:
    if name not in SPECS:
        raise UserError(f"unknown benchmark {name!r}; valid names: {', '.join(SPECS)}")


def benchmark_file(name: str, data_dir: Path) -> Path:
    check_name(name)
    path = Path(data_dir) / name / "test.jsonl"
    if not path.is_file():
        raise UserError(f"benchmark {name}: {path} does not exist (expected <data-dir>/{name}/test.jsonl)")
    return path


def problems_from_rows(name: str, rows: list[tuple[int, dict]], where: str) -> list[Problem]:
    """Rows are (line number, dict); a row without a question or gold answer is an error naming it."""
    spec = SPECS[name]
    problems = []
    for index, (lineno, row) in enumerate(rows):
        question = next((row[k] for k in spec.question_keys if row.get(k)), None)
        gold = spec.gold(row)
        if question is None or not gold:
            missing = "question" if question is None else "gold answer"
            raise UserError(f"{where}, line {lineno}: benchmark {name} row has no {missing}")
        fixed = override_gold(name, gold)
        problems.append(
            Problem(index=index, question=str(question), gold=fixed, raw_gold=gold if fixed != gold else "")
        )
    return problems


def load_benchmark(name: str, data_dir: str | Path | None = None) -> list[Problem]:
    """All problems of a benchmark, in file order, from `data_dir` or (if None) the Hub."""
    check_name(name)
    if data_dir is not None:
        path = benchmark_file(name, Path(data_dir))
        problems = problems_from_rows(name, list(read_jsonl(path)), str(path))
        if not problems:
            raise UserError(f"benchmark {name}: {path} holds no problems")
        return problems
    return _load_from_hub(name)


def _check_hub_reachable(name: str, repo: str) -> None:
    """Fail in seconds, not after ~30 s of retries, when the Hub is off or unreachable (a proxy is trusted)."""
    offline = [v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(v, "") not in ("", "0")]
    reason = f"{offline[0]} is set" if offline else None
    if reason is None and not any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        try:
            socket.create_connection(("huggingface.co", 443), timeout=5).close()
        except OSError as err:
            reason = f"huggingface.co cannot be reached ({err.strerror or err})"
    if reason is not None:
        raise UserError(
            f"benchmark {name}: no --data-dir given and {reason}, so the Hub dataset {repo} cannot be "
            "loaded; pass --data-dir DIR with DIR/<name>/test.jsonl"
        )


def _load_from_hub(name: str) -> list[Problem]:
    repo, config, split = SPECS[name].hub
    _check_hub_reachable(name, repo)
    try:
        import datasets

        rows = datasets.load_dataset(repo, config, split=split)
    except Exception as err:  # datasets raises many types (network, missing repo); all mean "no data"
        raise UserError(
            f"benchmark {name}: no --data-dir given and the Hub dataset {repo} could not be loaded ({err}); "
            "pass --data-dir DIR with DIR/<name>/test.jsonl"
        ) from err
    return problems_from_rows(name, [(i + 1, dict(r)) for i, r in enumerate(rows)], f"hub:{repo}")
