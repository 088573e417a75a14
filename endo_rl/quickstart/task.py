"""The quickstart's synthetic task: multi-step addition written out step by step ("expert demonstrations").

A problem with horizon H adds H+1 operands drawn from [0, max_operand] (default: one digit). The prompt is
the sum; the response is the expert's trace, one step per partial sum, then the answer in the `\\boxed{}`
form every grader in endo_rl understands:

    prompt   "3+5+2+7="
    response "3+5=8;8+2=10;10+7=17;\\boxed{17}"

Each step depends on the previous one, so a single slip anywhere makes the final answer wrong: the error
compounds in H, which is what the quickstart measures. All sets come from one seed; evaluation problems are
never seen in pretraining or RL (problems are compared as operand tuples).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

BOXED = "\\boxed{"
_LAST_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


@dataclass(frozen=True)
class AdditionProblem:
    operands: tuple[int, ...]

    @property
    def horizon(self) -> int:
        """H: the number of reasoning steps (additions)."""
        return len(self.operands) - 1

    @property
    def answer(self) -> int:
        return sum(self.operands)

    @property
    def prompt(self) -> str:
        return "+".join(map(str, self.operands)) + "="

    @property
    def trace(self) -> str:
        """The expert's step-by-step response (without the end-of-sequence token)."""
        steps, total = [], self.operands[0]
        for x in self.operands[1:]:
            steps.append(f"{total}+{x}={total + x};")
            total += x
        return "".join(steps) + f"{BOXED}{total}}}"


def extract_answer(response: str) -> int | None:
    """The integer inside the last `\\boxed{}` of a response; None when there is none or it is not an integer."""
    found = _LAST_BOXED.findall(response)
    if not found:
        return None
    text = found[-1].strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else None


def is_correct(response: str, problem: AdditionProblem) -> bool:
    return extract_answer(response) == problem.answer


def sample_problem(rng: random.Random, horizon: int, max_operand: int) -> AdditionProblem:
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    return AdditionProblem(tuple(rng.randint(0, max_operand) for _ in range(horizon + 1)))


def sample_set(
    rng: random.Random,
    horizon: int,
    n: int,
    max_operand: int,
    exclude: set[AdditionProblem] | frozenset[AdditionProblem] = frozenset(),
) -> list[AdditionProblem]:
    """`n` distinct problems of one horizon, none of them in `exclude`."""
    available = (max_operand + 1) ** (horizon + 1) - len([p for p in exclude if p.horizon == horizon])
    if n > available:
        raise ValueError(f"asked for {n} distinct problems with H={horizon}, only {available} exist")
    out: dict[AdditionProblem, None] = {}
    while len(out) < n:
        p = sample_problem(rng, horizon, max_operand)
        if p not in exclude:
            out[p] = None
    return list(out)


def sample_mixed(
    rng: random.Random,
    horizons: Sequence[int],
    n: int,
    max_operand: int,
    exclude: set[AdditionProblem] | frozenset[AdditionProblem],
) -> list[AdditionProblem]:
    """`n` problems (repeats allowed) with horizons drawn uniformly from `horizons`, none in `exclude`."""
    out: list[AdditionProblem] = []
    while len(out) < n:
        p = sample_problem(rng, rng.choice(list(horizons)), max_operand)
        if p not in exclude:
            out.append(p)
    return out


@dataclass
class Splits:
    """Every problem set of one quickstart run. Evaluation sets are keyed by horizon."""

    pretrain: list[AdditionProblem]
    rl: list[AdditionProblem]
    validation: dict[int, list[AdditionProblem]]
    test: dict[int, list[AdditionProblem]]


def make_splits(
    seed: int,
    train_horizons: Sequence[int],
    eval_horizons: Sequence[int],
    n_pretrain: int,
    n_rl: int,
    n_eval: int,
    max_operand: int = 9,
) -> Splits:
    """Test sets first, then validation sets disjoint from them, then training data disjoint from both."""
    outside = [h for h in eval_horizons if h not in train_horizons]
    if outside:
        raise ValueError(f"eval horizons {outside} are outside the training range {list(train_horizons)}")
    rng = random.Random(seed)
    test = {h: sample_set(rng, h, n_eval, max_operand) for h in eval_horizons}
    held_out = {p for ps in test.values() for p in ps}
    validation = {h: sample_set(rng, h, n_eval, max_operand, exclude=held_out) for h in eval_horizons}
    held_out |= {p for ps in validation.values() for p in ps}
    pretrain = sample_mixed(rng, train_horizons, n_pretrain, max_operand, exclude=held_out)
    rl = sample_mixed(rng, train_horizons, n_rl, max_operand, exclude=held_out)
    return Splits(pretrain=pretrain, rl=rl, validation=validation, test=test)


def rl_rows(problems: Iterable[AdditionProblem]) -> list[dict]:
    """RL prompt rows for the trainer's JSONL (`data.prompt_field=prompt`, `data.answer_field=answer`)."""
    return [{"prompt": p.prompt, "answer": str(p.answer), "horizon": p.horizon} for p in problems]
