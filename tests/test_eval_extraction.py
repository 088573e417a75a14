"""Answer extraction: `boxed` (ours) and `harness` (the Qwen2.5-Math evaluation harness's chain).

The harness cases' expected answers were produced by running the harness's own `extract_answer`
(QwenLM/Qwen2.5-Math @ a45202bd, evaluation/parser.py) on these strings, with its final `strip_string`
normalization left out (we compare with math-verify instead), and `$` signs and surrounding spaces removed as
`strip_string` also does.
"""

from __future__ import annotations

import pytest

from endo_rl.core.errors import UserError
from endo_rl.evaluation.benchmarks import Problem
from endo_rl.evaluation.evaluator import EvalSettings, _question
from endo_rl.evaluation.extraction import check_mode, final_answer
from endo_rl.evaluation.grading import Grader

HARNESS_CASES = [
    ("The final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}"),  # Minerva few-shot form
    ("Adding them up, the answer is 42.", "42"),  # "the answer is", trailing period dropped
    ("So the final answer is 7", "7"),  # "final answer is"
    ("We buy 3 apples and then 1,234 oranges", "1234"),  # last number, commas removed
    ("First \\boxed{5}, and the answer is 6", "5"),  # a box wins over "the answer is"
    ("The sum is \\boxed{12", "12"),  # an unclosed box is still taken
    ("Thus \\boxed 5$ is it", "5"),
    ("No digits here at all", None),
    ("The answer is $x=2$.", "x=2"),
    ("The answer is: 3/", "3"),  # leading ":" and trailing "/" dropped
    ("We get \\boxed{\\frac{1}{2}} and \\boxed{3}", "3"),  # the last box
    ("It costs 2.5 dollars and -3 remain", "-3"),
]


@pytest.mark.parametrize("completion, answer", HARNESS_CASES)
def test_harness_extraction_follows_the_harness(completion, answer):
    assert final_answer(completion, "harness") == answer


@pytest.mark.parametrize(
    "completion, answer",
    [
        ("Adding them up, the answer is 42.", None),  # no box, no answer
        ("The sum is \\boxed{12", None),  # a truncated box is not an answer
        ("First \\boxed{5}, and the answer is 6", "5"),
    ],
)
def test_boxed_extraction_takes_only_a_closed_last_box(completion, answer):
    assert final_answer(completion, "boxed") == answer


def test_fallbacks_grade_only_in_harness_mode():
    completion = "Adding the two we get 17, so the answer is 17."
    with Grader(timeout_s=3.0) as boxed, Grader(timeout_s=3.0, extract="harness") as harness:
        assert boxed.grade("17", completion).status == "no_answer"
        assert harness.grade("17", completion).correct
        assert harness.grade("17", "we count 3 then 17").correct  # last number
        assert not harness.grade("17", "we count 17 then 3").correct


def test_harness_mode_strips_the_question_and_defaults_to_2048_tokens():
    problem = Problem(index=0, question="  What is 1+1?\n", gold="2")
    assert _question(problem, "harness") == "What is 1+1?"
    assert _question(problem, "boxed") == "  What is 1+1?\n"
    yes_no = Problem(index=1, question="Is 7 prime?", gold="Yes")
    assert _question(yes_no, "harness") == "Is 7 prime? (Yes or No)"
    assert EvalSettings(extract="harness").max_new_tokens == 2048
    assert EvalSettings().max_new_tokens == 1024
    assert EvalSettings(extract="harness", max_new_tokens=512).max_new_tokens == 512


def test_unknown_mode_is_a_user_error():
    with pytest.raises(UserError, match="boxed, harness"):
        check_mode("first")
    with pytest.raises(UserError, match="extract mode"):
        EvalSettings(extract="first").validate()
