"""Evaluation metrics: pure functions of per-problem correctness lists, no model or files.

`per_problem[i]` holds the correctness of each sample drawn for problem i (one entry for greedy decoding).
- accuracy / avg@k: mean over problems of the fraction of correct samples (pass@1 estimated from k samples).
- standard error: sample standard deviation of the per-problem fractions (ddof=1) over sqrt(#problems); this
  is the uncertainty from the finite problem set, the one that matters on AIME24's 30 problems.
- pass@k: fraction of problems with at least one correct sample.
- macro average over benchmarks: unweighted mean; its standard error is sqrt(sum se_b^2) / B.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def problem_fractions(per_problem: Sequence[Sequence[bool]]) -> list[float]:
    if any(len(samples) == 0 for samples in per_problem):
        raise ValueError("every problem needs at least one graded sample")
    return [sum(samples) / len(samples) for samples in per_problem]


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (None for fewer than two values)."""
    if not values:
        raise ValueError("no values to average")
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def avg_at_k(per_problem: Sequence[Sequence[bool]]) -> float:
    return mean_and_stderr(problem_fractions(per_problem))[0]


def pass_at_k(per_problem: Sequence[Sequence[bool]]) -> float:
    return sum(any(samples) for samples in per_problem) / len(per_problem)


def macro_average(accuracies: Sequence[float], stderrs: Sequence[float | None]) -> tuple[float, float | None]:
    """Unweighted mean over benchmarks and its standard error (None if any benchmark has none)."""
    if not accuracies:
        raise ValueError("no benchmarks to average")
    mean = sum(accuracies) / len(accuracies)
    if any(se is None for se in stderrs):
        return mean, None
    return mean, math.sqrt(sum(se * se for se in stderrs)) / len(accuracies)
