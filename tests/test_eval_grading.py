"""Grading: math-verify equivalences, statuses, timeouts in threads and worker processes, metrics."""

from __future__ import annotations

import math
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from endo_rl.evaluation import metrics as eval_metrics
from endo_rl.evaluation.grading import Grader


@pytest.fixture(scope="module")
def grader():
    with Grader(timeout_s=3.0, grace_s=2.0) as g:
        yield g


EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"),
    ("0.5", "\\dfrac{1}{2}"),
    ("\\frac{1}{2}", "\\frac12"),
    ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2"),
    ("27", "27.0"),  # AMC gold format
    ("025", "25"),  # AIME leading zero
    ("1000", "1,000"),
    ("10", "10\\text{ cm}"),  # units dropped
    ("6.5", "6.5 \\mathrm{~m}"),
    ("90", "90^\\circ"),
    ("50\\%", "50"),  # percent either way
    ("0.5", "50\\%"),
    ("[1,3)", "[1, 3)"),  # intervals
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\pi/2)"),  # tuples
    ("69, 84", "84, 69"),  # OlympiadBench multiple answers: order free
    ("(1,8,19), (2,7,13), (4,5,7)", "(4,5,7),(1,8,19),(2,7,13)"),
    ("2n-2", "2(n-1)"),
    ("3", "x=3"),
]
NOT_EQUIVALENT = [
    ("\\frac{1}{2}", "0.51"),
    ("18", "18.5"),
    ("[1,3)", "(1,3)"),  # open vs half-open
    ("(1,2)", "(2,1)"),  # tuple order matters
    ("69, 84", "69"),  # one of two answers is not enough
    ("2n-2", "2n+2"),
    ("25", "250"),
]


# Each class of misgrading found on real completions (issue 14), as real-looking (gold, answer) pairs.
FIXED_CLASSES_RIGHT = [
    ("4.5e33", "4.5 \\times 10^{33}"),  # Minerva AeB gold: `e` is not Euler's number
    ("1e-5", "10^{-5}"),
    ("1e-5", "0.00001"),
    ("-1./3", "-\\frac{1}{3}"),  # Minerva `-1./3` did not parse at all
    ("-3./2", "-1.5"),
    ("35", "35.0\\%"),  # percent: 35.0% failed while 35% passed
    ("35", "35\\%"),
    ("17.5\\%", "17.5"),
    ("(-\\infty,0)\\cup\\{1\\}.", "(-\\infty, 0) \\cup \\{1\\}"),  # gold with trailing period
    ("-2,-2", "-2, -2"),  # a repeated root
    ("\\frac{37}{4} m", "\\frac{37m}{4}"),  # m is the variable of the question, kept
    ("\\frac{1}{m} t", "\\frac{t}{m}"),
    ("\\ln 3", "\\log 3"),  # log without base is natural
    ("12", "12^{th} grade"),
    ("12", "12^{\\text{th}}"),
    ("\\text{(C)}", "(C) Plane"),
    ("\\text{(C)}", "\\textbf{(C)}"),
    ("x^{2}+1", "x²+1"),
    ("\\text{SRMC}", "SRMC"),
    ("MR=SRMC", "SRMC = MR"),
    ("15000", "15,000 \\, \\text{kcal}"),
    ("\\frac{12}{5,\\!525}", "\\frac{12}{5525}"),
    ("\\frac{270}7\\text{ degrees}", "\\frac{270}{7}"),
    ("m_{p} c^{2}\\left(\\gamma^{2}-1\\right) \\sin ^{2} \\theta", "m_p c^2 (\\gamma^2 - 1)\\sin^2\\theta"),
    ("\\text{June 20}", "\\text{June 20th}"),
    ("\\text{4:30 p.m.}", "4:30 \\text{ p.m.}"),  # both graders called this wrong
    ("\\text{1:03 PM}", "1:03 \\text{PM}"),
]
FIXED_CLASSES_WRONG = [
    ("4.5e33", "4.5"),
    ("(-\\infty,0)\\cup\\{1\\}.", "0"),  # was accepted: the gold read as 0
    ("-2,-2", "-2"),  # was accepted: the gold read as the set {-2}
    ("\\frac{37}{4} m", "\\frac{37}{4}"),  # was accepted: the m dropped as metres
    ("\\frac{1}{m} t", "\\frac{1}{m}"),
    ("\\log_2 3", "\\log 3"),
    ("\\text{(C)}", "(D) Plane"),
    ("\\text{SRMC}", "SMRC"),  # an anagram was accepted: a product of four symbols
    ("MR=SRMC", "MR=LRMC"),
    ("15000", "15"),
    ("x^{2}+1", "x³+1"),
    ("\\text{4:30 p.m.}", "4:30 \\text{ a.m.}"),
]


@pytest.mark.parametrize("gold, answer", FIXED_CLASSES_RIGHT)
def test_each_fixed_class_grades_the_right_answer_correct(grader, gold, answer):
    grade = grader.grade(gold, f"... so the answer is $\\boxed{{{answer}}}$.")
    assert grade.status == "ok" and grade.correct, grade


@pytest.mark.parametrize("gold, answer", FIXED_CLASSES_WRONG)
def test_each_fixed_class_grades_the_wrong_answer_wrong(grader, gold, answer):
    grade = grader.grade(gold, f"\\boxed{{{answer}}}")
    assert grade.status == "ok" and not grade.correct, grade


@pytest.mark.parametrize("gold", ["np.arcsin(10/13)", "t(0,4]"])
def test_a_gold_that_is_not_math_is_a_parse_error_not_a_string_match(grader, gold):
    grade = grader.grade(gold, f"\\boxed{{{gold}}}")  # the identical string must not pass as "correct"
    assert grade.status == "parse_error" and not grade.correct and "gold" in grade.detail, grade


@pytest.mark.parametrize("gold, answer", EQUIVALENT)
def test_equivalent_answers_are_correct(grader, gold, answer):
    grade = grader.grade(gold, f"Reasoning... so the answer is $\\boxed{{{answer}}}$.")
    assert grade.status == "ok" and grade.correct, grade


@pytest.mark.parametrize("gold, answer", NOT_EQUIVALENT)
def test_non_equivalent_answers_are_wrong(grader, gold, answer):
    grade = grader.grade(gold, f"\\boxed{{{answer}}}")
    assert grade.status == "ok" and not grade.correct, grade


def test_last_boxed_is_graded_not_the_first(grader):
    assert grader.grade("7", "maybe \\boxed{5}? no: \\boxed{7}").correct
    assert not grader.grade("5", "maybe \\boxed{5}? no: \\boxed{7}").correct


def test_missing_and_unparseable_answers_are_counted_not_zeroed(grader):
    assert grader.grade("5", "the answer is 5").status == "no_answer"
    assert grader.grade("5", "\\boxed{\\text{}}").status == "parse_error"


ADVERSARIAL = {
    "power tower": "9^{9^{9^{9^{9}}}}",
    "huge factorial": "(10^{9})!",
    "deep nesting": "(" * 300 + "1" + ")" * 300,
    "huge number": "9" * 200_000,
    "long unicode": "αβ∑∫√" * 20_000,
}


@pytest.fixture(scope="module")
def fast_grader():
    with Grader(timeout_s=1.0, grace_s=1.0) as g:
        yield g


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_answers_never_hang_past_the_timeout(fast_grader, name):
    fast_grader.grade("1", "\\boxed{1}")  # (re)start the child outside the timed part
    start = time.monotonic()
    grade = fast_grader.grade("5", f"\\boxed{{{ADVERSARIAL[name]}}}")
    assert time.monotonic() - start < 1.0 + 1.0 + 1.5
    assert not grade.correct and grade.status in ("timeout", "parse_error", "ok")
    assert fast_grader.grade("5", "\\boxed{5}").correct  # still usable afterwards


def test_child_that_ignores_its_alarm_is_killed_and_counted():
    with Grader(timeout_s=0.5, grace_s=0.5) as g:
        g.grade("1", "\\boxed{1}")
        g._child_timeout_s = 60  # the child will not stop itself: the parent's deadline must
        start = time.monotonic()
        grade = g.grade("5", "\\boxed{9^{9^{9^{9^{9}}}}}")
        assert grade.status == "timeout" and not grade.correct
        assert time.monotonic() - start < 3
        g._child_timeout_s = 0.5
        assert g.grade("5", "\\boxed{5}").correct  # restarted


def _grade_tower_and_easy() -> tuple[str, bool]:
    with Grader(timeout_s=1.0, grace_s=1.0) as g:
        slow = g.grade("5", "\\boxed{9^{9^{9^{9^{9}}}}}")
        easy = g.grade("1/2", "\\boxed{0.5}")
    return slow.status, easy.correct


def test_timeout_is_counted_in_a_worker_thread():
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(_grade_tower_and_easy).result(timeout=60) == ("timeout", True)


def test_timeout_is_counted_in_a_worker_process():
    with ProcessPoolExecutor(1) as pool:
        assert pool.submit(_grade_tower_and_easy).result(timeout=60) == ("timeout", True)


# --- metrics, against hand-computed values ---


def test_mean_and_stderr_by_hand():
    mean, se = eval_metrics.mean_and_stderr([1.0, 0.0, 1.0, 1.0])
    assert mean == 0.75
    assert math.isclose(se, math.sqrt(0.25 / 4))  # sample var = (3*0.0625 + 0.5625)/3 = 0.25
    assert eval_metrics.mean_and_stderr([0.3]) == (0.3, None)


def test_avg_at_k_and_pass_at_k_by_hand():
    per_problem = [[True, False, False, False], [True, True, True, True], [False] * 4]
    assert math.isclose(eval_metrics.avg_at_k(per_problem), (0.25 + 1.0 + 0.0) / 3)
    assert math.isclose(eval_metrics.pass_at_k(per_problem), 2 / 3)
    fractions = eval_metrics.problem_fractions(per_problem)
    var = sum((f - 1.25 / 3) ** 2 for f in fractions) / 2
    assert math.isclose(eval_metrics.mean_and_stderr(fractions)[1], math.sqrt(var / 3))


def test_macro_average_by_hand():
    mean, se = eval_metrics.macro_average([0.2, 0.6], [0.03, 0.04])
    assert math.isclose(mean, 0.4) and math.isclose(se, 0.05 / 2)
    assert eval_metrics.macro_average([0.2, 0.6], [0.03, None]) == (pytest.approx(0.4), None)


@pytest.mark.parametrize(
    "gold, answer, correct",
    [
        ("4.4e7", "44241339", True),  # Minerva: more figures than the gold, rounds to it
        ("6630", "6630.65", True),
        ("1.6", "1.57", True),
        ("0.264", "0.265", False),  # rounds to another value
        ("0.264", "0.26", False),  # fewer figures than the gold
        ("12", "12.4", False),  # short integers are exact values, not measurements
    ],
)
def test_minerva_golds_are_rounded_measurements(grader, gold, answer, correct):
    assert grader.grade(gold, f"\\boxed{{{answer}}}", rounded_gold=True).correct is correct
    assert grader.grade(gold, f"\\boxed{{{answer}}}").correct is (answer == gold)  # exact elsewhere


def test_hyperbolic_functions_equal_their_exponential_form(grader):
    gold = "\\frac{1}{2a}(\\exp{a*t} - \\exp{-a*t})"
    assert grader.grade(gold, "\\boxed{\\frac{1}{a}\\sinh(at)}").correct
    assert not grader.grade(gold, "\\boxed{\\frac{1}{a}\\cosh(at)}").correct
