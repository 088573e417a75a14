"""Which part of a completion is its final answer: `boxed` (ours, the default) or `harness`.

- `boxed`: the content of the last `\\boxed{}` (endo_rl.core.answers.last_boxed); no box, no answer. The
  training reward uses this: a reward for "the answer is 5" or for the last number in the text would pay a
  policy for stopping anywhere a number happens to appear, and the prompt asks for a box.
- `harness`: the answer-extraction chain of the Qwen2.5-Math evaluation harness (QwenLM/Qwen2.5-Math,
  evaluation/parser.py `extract_answer`, re-implemented here from its documented behaviour), for
  reproducing published baselines. In order, the first that applies:
    1. Minerva's few-shot format: the text between "final answer is $" and "$. I hope";
    2. the last `boxed` (brace-matched; `\\boxed 5` up to the next `$`), taken even when never closed;
    3. the text after the last "he answer is" (matches "The answer is" and "the answer is");
    4. the text after the last "final answer is";
    5. the text after the first "答案是", up to a blank line;
    6. the last number (`-?\\d*\\.?\\d+`) of the completion with its commas removed.
  Then newlines are removed, a leading ":" and a trailing "." or "/" dropped, and `$` signs removed. The
  harness also strips surrounding whitespace from the question and generates up to 2048 new tokens by
  default; `EvalSettings` applies both when extract is "harness". What is compared stays ours: math-verify with
  endo_rl's normalization (endo_rl.evaluation.compare), not the harness's own `math_equal`.
"""

from __future__ import annotations

import re

from endo_rl.core.answers import last_boxed
from endo_rl.core.errors import UserError

EXTRACT_MODES = ("boxed", "harness")
HARNESS_MAX_NEW_TOKENS = 2048
"""The harness's default `--max_tokens_per_call`."""


def check_mode(mode: str) -> None:
    if mode not in EXTRACT_MODES:
        raise UserError(f"unknown extract mode {mode!r}; valid: {', '.join(EXTRACT_MODES)}")


def final_answer(completion: str, mode: str = "boxed") -> str | None:
    """The final answer of `completion` under `mode`; None when there is none."""
    if mode == "boxed":
        return last_boxed(completion)
    if mode == "harness":
        answer = harness_answer(completion)
        return answer or None
    check_mode(mode)
    return None


def _after_last_boxed(text: str) -> str:
    rest = text.split("boxed")[-1]
    if not rest.startswith("{"):
        return rest.split("$")[0].strip()
    depth, out = 1, []
    for ch in rest[1:]:
        depth += 1 if ch == "{" else -1 if ch == "}" else 0
        if depth == 0:
            break
        out.append(ch)
    return "".join(out)


def _raw_harness_answer(text: str) -> str:
    if "final answer is $" in text and "$. I hope" in text:
        return text.split("final answer is $", 1)[1].split("$. I hope", 1)[0].strip()
    if "boxed" in text:
        return _after_last_boxed(text)
    for marker in ("he answer is", "final answer is"):
        if marker in text:
            return text.split(marker)[-1].strip()
    if "答案是" in text:
        return text.split("答案是")[1].strip().split("\n\n")[0].strip()
    numbers = re.findall(r"-?\d*\.?\d+", text.replace(",", ""))
    return numbers[-1] if numbers else ""


def harness_answer(completion: str) -> str:
    """The harness chain (module docstring); "" when it finds nothing."""
    text = completion.replace("\u043a\u0438", "").strip()
    answer = re.sub(r"\n\s*", "", _raw_harness_answer(text))
    if answer.startswith(":"):
        answer = answer[1:]
    if answer.endswith("."):
        answer = answer[:-1]
    if answer.endswith("/"):
        answer = answer[:-1]
    answer = answer.replace("\\$", "").replace("$", "").replace("\\(", "").replace("\\)", "")
    return answer.strip()
