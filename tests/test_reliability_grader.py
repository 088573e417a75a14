"""Grader robustness: property-based tests (hypothesis) and a fuzz run of adversarial answers.

What must hold for any completion string: grading returns (never raises), its status is one of
`grading.STATUSES`, `correct` implies status "ok", and it finishes within timeout + grace (+ a margin for the
IPC round trip); the evaluation built on it (`endo-rl eval --predictions`) counts every completion under
exactly one status. Fixed equivalence and timeout cases are in tests/test_eval_grading.py.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import BENCHMARKS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from endo_rl.core.answers import last_boxed
from endo_rl.evaluation.grading import STATUSES, Grader

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S, GRACE_S = 1.0, 1.0
BOUND_S = TIMEOUT_S + GRACE_S + 1.0  # the grader's own deadline plus a margin for the round trip
PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

LATEX_PIECES = [
    "\\boxed{", "\\boxed ", "\\fbox{", "{", "}", "\\{", "\\}", "\\frac", "\\dfrac", "^", "_", "\\sqrt", "\\left(",
    "\\right)", "(", ")", "[", "]", "$", "\\", "\\\\", "\\text{", "\\mathrm{", "\\infty", "\\pi", ",", ".", "-",
    "+", "=", "/", "9", "0", "1", "x", " ", "\n", "é", "∑", "√", "\u200b", "\x00", "%", "\\%", "\\circ", "!",
]  # fmt: skip
latex_soup = st.lists(st.sampled_from(LATEX_PIECES), max_size=60).map("".join)
any_text = st.one_of(st.text(max_size=200), latex_soup, latex_soup.map(lambda s: f"\\boxed{{{s}}}"))


@pytest.fixture(scope="module")
def grader():
    with Grader(timeout_s=TIMEOUT_S, grace_s=GRACE_S) as g:
        yield g


def timed_grade(grader: Grader, gold: str, completion: str):
    grader.grade("1", "\\boxed{1}")  # a child killed by the previous case restarts outside the timed part
    start = time.monotonic()
    grade = grader.grade(gold, completion)
    return grade, time.monotonic() - start


def check_grade(grade, seconds: float) -> None:
    assert grade.status in STATUSES, grade
    assert not grade.correct or grade.status == "ok", grade
    assert seconds < BOUND_S, (grade, seconds)


@PROPERTY
@given(text=any_text)
def test_last_boxed_never_raises_and_returns_a_stripped_substring(text):
    answer = last_boxed(text)
    assert answer is None or (answer and answer == answer.strip() and answer in text)


@PROPERTY
@given(gold=st.one_of(st.integers(-(10**6), 10**6).map(str), any_text), completion=any_text)
def test_any_completion_gets_a_known_status_within_the_timeout(grader, gold, completion):
    check_grade(*timed_grade(grader, gold, completion))


@PROPERTY
@given(n=st.integers(-(10**12), 10**12), prose=st.text(alphabet="abc xyz.,", max_size=40))
def test_boxed_integer_equals_its_gold_and_no_other(grader, n, prose):
    assert grader.grade(str(n), f"{prose} \\boxed{{{n}}}").correct
    assert grader.grade_answer(str(n), str(n)).correct  # boxed in the text or bare: the same answer
    other = grader.grade(str(n), f"{prose} \\boxed{{{n + 1}}}")
    assert other.status == "ok" and not other.correct


@PROPERTY
@given(
    numerator=st.integers(-999, 999),
    denominator=st.sampled_from([1, 2, 4, 5, 8, 10, 16, 20, 25, 40, 50, 125]),
)
def test_fraction_equals_its_exact_decimal(grader, numerator, denominator):
    value = Fraction(numerator, denominator)
    decimal = f"{float(value):.10f}".rstrip("0").rstrip(".")
    assert Fraction(decimal) == value  # exact by construction: denominators of 2^a 5^b
    sign = "-" if value < 0 else ""
    frac = f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"
    grade = grader.grade(frac, f"\\boxed{{{decimal}}}")
    assert grade.status == "ok" and grade.correct, (frac, decimal, grade)


# ----- fuzz: adversarial answers through the grader and through `endo-rl eval --predictions` -----------


def adversarial(n: int, seed: int = 0) -> list[str]:
    """n completions: the named monsters first, then random mixes of them and of LaTeX soup."""
    rng = random.Random(seed)
    named = [
        "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",  # 10k-deep braces
        "\\boxed{" + "{" * 10_000 + "1}",  # unbalanced: never closed
        "\\boxed{1" + "}" * 5_000,
        "\\boxed{" + "(" * 5_000 + "1" + ")" * 5_000 + "}",
        "\\boxed{" + "\\frac{" * 2_000 + "1" + "}{2}" * 2_000 + "}",
        "\\boxed{" + "\\sqrt{" * 3_000 + "2" + "}" * 3_000 + "}",
        "\\boxed{1" + "0" * 100_000 + "}",  # 10^100000
        "\\boxed{" + "9" * 100_000 + "." + "9" * 1000 + "}",
        "\\boxed{10^{10^{10^{10^{10}}}}}",
        "\\boxed{9^{9^{9^{9^{9}}}}}",
        "\\boxed{(10^{9})!}",
        "\\boxed{" + "αβ∑∫√" * 20_000 + "}",
        "\\boxed{" + "🙂" * 50_000 + "}",
        "\\boxed{\ud800}",  # a lone surrogate
        "\\boxed{\x00\x01\x02}",
        "\\boxed{" + "x+" * 20_000 + "x}",
        "\\boxed{" + "\\left(" * 1000 + "1" + "\\right)" * 1000 + "}",
        "\\boxed{\\begin{pmatrix}" + "1&" * 5000 + "1\\end{pmatrix}}",
        "\\boxed{" + "\\\\" * 10_000 + "}",
        "\\boxed{\\text{" + "a" * 100_000 + "}}",
        "\\boxed " + "7" * 100_000,
        "\\boxed{}",
        "\\boxed{   }",
        "no box at all " * 1000,
        "\\boxed{1/0}",
        "\\boxed{\\infty - \\infty}",
        "\\boxed{0^0}",
        "\\boxed{\\frac{1}{0}}",
        "\\boxed{x = \\{1,2,3\\}}",
        "\\boxed{[" + ",".join(map(str, range(20_000))) + "]}",
    ]
    out = named[:n]
    while len(out) < n:
        parts = [rng.choice(named)[: rng.randint(1, 3000)] for _ in range(rng.randint(1, 3))]
        parts += ["".join(rng.choices(LATEX_PIECES, k=rng.randint(1, 400)))]
        rng.shuffle(parts)
        out.append("".join(parts))
    return out


def fuzz_grader(n: int) -> Counter:
    statuses: Counter = Counter()
    with Grader(timeout_s=TIMEOUT_S, grace_s=GRACE_S) as g:
        for completion in adversarial(n):
            grade, seconds = timed_grade(g, "5", completion)
            check_grade(grade, seconds)
            statuses[grade.status] += 1
        assert g.grade("5", "\\boxed{5}").correct  # still usable after all of that
    assert sum(statuses.values()) == n
    return statuses


def fuzz_eval(n: int, tmp_path: Path) -> dict:
    """`endo-rl eval --predictions` over n adversarial completions of aime24 problems (as their samples)."""
    preds = tmp_path / "adversarial.jsonl"
    rows = [{"benchmark": "aime24", "index": i % 30, "completion": c} for i, c in enumerate(adversarial(n))]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "endo_rl.cli", "eval", "--predictions", str(preds), "--data-dir", str(BENCHMARKS),
         "--grading-timeout", str(TIMEOUT_S), "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=60 + n * 4, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    m = report["benchmarks"]["aime24"]
    by_status = Counter(r["status"] for r in report["results"])
    assert sum(by_status.values()) == m["n_completions"] == n
    assert set(by_status) <= set(STATUSES)
    for status in ("no_answer", "timeout", "parse_error"):
        assert m[f"n_{status}"] == by_status[status], status  # every failure counted, none a silent 0
    assert m["n_correct"] == sum(r["correct"] for r in report["results"]) <= by_status["ok"]
    return m


def test_fuzz_grader_short():
    statuses = fuzz_grader(40)
    assert statuses["ok"] and statuses["no_answer"] and statuses["parse_error"] + statuses["timeout"]


def test_fuzz_evaluation_counts_every_failure_short(tmp_path):
    fuzz_eval(40, tmp_path)


@pytest.mark.slow
def test_fuzz_grader_long():
    fuzz_grader(400)


@pytest.mark.slow
def test_fuzz_evaluation_counts_every_failure_long(tmp_path):
    fuzz_eval(300, tmp_path)
