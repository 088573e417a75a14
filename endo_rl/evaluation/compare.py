"""Is an extracted answer equal to the gold? math-verify plus the rules real completions showed it needs.

Runs inside the grading worker process (endo_rl.evaluation.grading), which bounds it with a deadline.
Both sides are first normalized (endo_rl.evaluation.answer_norm). Then, in order:

1. **Words** (`\\text{Evelyn}`, `\\text{east}`, `MR=SRMC`): compared as words, case and spaces aside.
   math-verify reads `SRMC` as a product of four symbols, which any anagram equals.
2. **A choice letter** (`\\text{(C)}`): the answer's chosen letter (`(C) Plane`, `C`) must be that letter.
3. **Math**: the gold must parse to a math object (never only to a raw string, which math-verify would compare
   as text): otherwise the grade is `parse_error` with the gold named. The gold is read with unit removal
   off, so a variable such as the `m` of `\\frac{37}{4} m` stays; the answer is read both with and without
   unit removal (`10\\text{ cm}` and `\\frac{37}{4} m` both keep their meaning) and is correct if either
   reading verifies. An answer with a percent sign, or a number followed by plain words (`12 grade`), is also
   read without them, so 35 == 35% == 35.0% and 17.5% == 17.5.
4. **Lists with repeated values** (`-2,-2`): compared element by element as multisets, since math-verify
   collapses them into sets ({-2}).
5. **Rounded golds** (`rounded_gold=True`, Minerva: physics answers given to a few significant figures): a
   numeric answer is also correct when, rounded to the gold's significant figures, it equals the gold
   (`4.4241\\times10^{7}` for `4.4e7`, `6630.65` for `6630`). An answer with fewer figures is not.
"""

from __future__ import annotations

import logging
import math
import re
from functools import lru_cache

from endo_rl.evaluation.answer_norm import (
    answer_choice_letter,
    answer_text_key,
    choice_letter,
    has_repeated_values,
    normalize,
    number_then_words,
    split_top_level,
    strip_text_unit,
    text_key,
    without_percent,
)

logging.getLogger("math_verify").setLevel(logging.ERROR)


@lru_cache(maxsize=2)
def _configs(units: bool) -> list:
    from latex2sympy2_extended.latex2sympy2 import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    norm = NormalizationConfig(
        basic_latex=True, units=units, malformed_operators=True, nits=True, boxed="all", equations=False
    )
    return [LatexExtractionConfig(normalization_config=norm), ExprExtractionConfig()]


def parse_math(text: str, units: bool) -> list:
    """math-verify's parse of `text` as the content of a `\\boxed{}`; [] or only strings when it is not math."""
    from math_verify import parse

    return parse("\\boxed{" + text + "}", extraction_config=_configs(units), parsing_timeout=None)


def is_math(parsed: list) -> bool:
    return any(not isinstance(x, str) for x in parsed)


def _verify(gold_parsed: list, answer_parsed: list) -> bool:
    from math_verify import verify

    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None)) or _equal_as_exponentials(
        gold_parsed[0], answer_parsed[0]
    )


def _equal_as_exponentials(gold, answer) -> bool:
    """`\\frac{1}{a}\\sinh(at)` == `\\frac{1}{2a}(e^{at}-e^{-at})`: math-verify does not rewrite hyperbolic
    functions, so expressions with one are also compared after rewriting both into exponentials."""
    import sympy

    hyperbolic = (sympy.sinh, sympy.cosh, sympy.tanh)
    exprs = (gold, answer)
    if not all(isinstance(e, sympy.Expr) for e in exprs) or not any(e.has(*hyperbolic) for e in exprs):
        return False
    return sympy.simplify((gold - answer).rewrite(sympy.exp)) == 0


def _result(correct: bool, status: str = "ok", detail: str = "") -> dict:
    return {"correct": correct, "status": status, "detail": detail}


def _answer_readings(answer: str) -> list[list]:
    """Every math reading of the answer: with and without unit removal, with and without a percent sign or
    trailing words."""
    texts = [answer, without_percent(answer), number_then_words(answer)]
    readings = []
    for text in dict.fromkeys(t for t in texts if t):
        for units in (False, True):
            parsed = parse_math(text, units)
            if is_math(parsed):
                readings.append(parsed)
    return readings


def _match_multiset(gold: str, answer: str) -> bool:
    """Each gold element equals a different answer element, and the counts agree."""
    gold_parts, answer_parts = split_top_level(gold), split_top_level(answer)
    if len(gold_parts) != len(answer_parts):
        return False
    unused = [_answer_readings(a) for a in answer_parts]
    for part in gold_parts:
        parsed = parse_math(part, units=False)
        hit = next((i for i, rs in enumerate(unused) if any(_verify(parsed, r) for r in rs)), None)
        if hit is None:
            return False
        unused.pop(hit)
    return True


_GOLD_NUMBER = re.compile(r"(-?)(\d+(?:\.\d*)?)(?:\\times10\^\{?(-?\d+)\}?)?")


def _significant(gold: str) -> tuple[float, int] | None:
    """(value, significant figures) of a plain decimal gold such as `4.4\\times10^{7}` or `6630` (trailing
    zeros of an integer are not significant); None for other golds and for one-figure or short integers."""
    match = _GOLD_NUMBER.fullmatch(gold.replace(" ", ""))
    if not match:
        return None
    sign, mantissa, exponent = match.groups()
    digits = mantissa.replace(".", "").lstrip("0")
    if "." not in mantissa:
        digits = digits.rstrip("0")
    if len(digits) < 2 or ("." not in mantissa and not exponent and len(mantissa) < 3):
        return None  # `2`, `12`, `100`: counts and exact values, not measurements
    return float(sign + mantissa) * 10 ** int(exponent or 0), len(digits)


def _rounds_to(gold: str, readings: list[list]) -> bool:
    significant = _significant(gold)
    if significant is None:
        return False
    value, figures = significant
    for reading in readings:
        x = reading[0]
        if getattr(x, "is_number", False) and getattr(x, "is_real", False):
            rounded = float(f"{float(x):.{figures}g}")
            if math.isclose(rounded, value, rel_tol=1e-9):
                return True
    return False


def compare(gold: str, answer: str, rounded_gold: bool = False) -> dict:
    """{"correct", "status", "detail"} for one gold and one extracted answer (see the module docstring)."""
    gold, answer = normalize(gold), normalize(answer)
    key = text_key(gold)
    if key is not None:
        return _result(answer_text_key(answer) == key, detail="compared as words")
    letter = choice_letter(gold)
    if letter is not None and answer_choice_letter(answer) is not None:
        return _result(answer_choice_letter(answer) == letter, detail="compared as a choice letter")
    gold = strip_text_unit(gold)
    golds = [parse_math(gold, units=False)]
    if not is_math(golds[0]):
        return _result(False, "parse_error", f"gold answer {gold!r} is not parseable math")
    gold_without_percent = without_percent(gold)
    if gold_without_percent:
        golds.append(parse_math(gold_without_percent, units=False))
    readings = _answer_readings(answer)
    if not readings:
        return _result(False, "parse_error", "answer could not be parsed")
    if has_repeated_values(gold):
        return _result(_match_multiset(gold, answer), detail="compared as a multiset")
    if any(_verify(g, r) for g in golds for r in readings):
        return _result(True)
    if rounded_gold and _rounds_to(gold, readings):
        return _result(True, detail="equal after rounding to the gold's significant figures")
    return _result(False)
