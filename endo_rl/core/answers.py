"""Finding a completion's final answer in its text: the content of the last `\\boxed{}`.

Shared by the evaluator (grading) and the training data (gold answers of MATH-style solutions), so both read
an answer the same way.
"""

from __future__ import annotations

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def _match_braces(text: str, open_at: int) -> str | None:
    """Content of the `{...}` group opening at `open_at`, nested braces included; None if never closed.
    A backslash escapes the next character, so `\\{1, 2\\}` (a set) does not count as braces."""
    depth, i = 0, open_at
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        depth += 1 if ch == "{" else -1 if ch == "}" else 0
        if depth == 0:
            return text[open_at + 1 : i]
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`) in `text`; None if there is none
    or the last one is never closed (a truncated answer is not an answer)."""
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    rest = start + len(cmd)
    if text.startswith("{", rest):
        content = _match_braces(text, rest)
    elif text.startswith(" ", rest):  # `\boxed 5`: up to the next space or `$`
        token = text[rest:].lstrip(" ").split("$")[0].split()
        content = token[0] if token else None
    else:
        return None
    return content.strip() if content is not None and content.strip() else None
