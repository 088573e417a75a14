"""Normalizing answers before math-verify reads them: pure string functions, no math-verify import.

Each rule fixes a class of misreadings found by re-grading real completions (BENCHMARKS.md, "Grader
fidelity on real completions"); the grader applies `normalize` to the gold and to the answer alike, so a rule
can never make the two sides differ:

| rule | before | after | why |
|---|---|---|---|
| scientific notation | `4.5e33`, `1e-5` | `4.5\\times10^{33}`, `1\\times10^{-5}` | math-verify reads `e` as Euler's number |
| dangling decimal point | `-1./3`, `5.` | `-1/3`, `5` | `-1./3` does not parse at all |
| trailing punctuation | `(-\\infty,0)\\cup\\{1\\}.` | `(-\\infty,0)\\cup\\{1\\}` | the `.` turned the gold into `0` |
| thousands separators | `15,000 \\, \\text{kcal}`, `5,\\!525` | `15000 \\text{kcal}`, `5525` | `15,000` is read as the set {15, 0} |
| ordinals | `12^{th} grade` | `12 grade` | `^{th}` is read as an exponent |
| unicode math | `x²`, `−3`, `√2`, `π` | `x^{2}`, `-3`, `\\sqrt2`, `\\pi` | math-verify does not read them |
| `\\log` without base | `\\log 3` | `\\ln 3` | math-verify reads it as base 10; in these benchmarks it is natural |
| `i` before a root | `2i\\sqrt{3}` | `2\\sqrt{3} i` | math-verify made that `i` a real symbol, unequal to the gold's `i` |
| Greek gamma | `\\gamma^{2}-1` | `g_{\\gamma}^{2}-1` | read as the gamma function, `\\gamma^{2}-1` became complex infinity |
| subscripted E | `E_{1}` | `\\mathrm{E}_{1}` | `E_{1}` (an energy level) does not parse |
| text in a subscript | `\\lambda_{\\text {red}}` | `\\lambda_{red}` | kept apart from words and units |
| command in a subscript | `L_{\\odot}` | `L_{odot}` | `L_{\\odot}` does not parse |

Helpers for the grader's comparison rules (text golds, choices, lists with repeated values, percent) are below.
"""

from __future__ import annotations

import re

_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")
_UNICODE = {
    "−": "-", "–": "-", "×": "\\times ", "·": "\\cdot ", "÷": "\\div ", "√": "\\sqrt", "π": "\\pi ",
    "∞": "\\infty ", "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne ", "°": "^\\circ", "∪": "\\cup ", "∩": "\\cap ",
    "\u00a0": " ", "\u200b": "",
}  # fmt: skip
_SCI = re.compile(r"(?<![\w.\\])(\d+(?:\.\d+)?)[eE]([+-]?\d+)(?![\w.])")
_DANGLING_POINT = re.compile(r"(\d)\.(?=\s*(?:[/)}\],;]|$))")
_THOUSANDS = re.compile(r"(?<![\d.,(\[])(\d{1,3}(?:,\d{3})+)(?![\d,)\]])")  # not `(12,102)`
_ORDINAL = re.compile(
    r"(\d)\s*(?:\^\s*\{\s*\\(?:text|mathrm|textrm)\s*\{\s*(?:st|nd|rd|th)\s*\}\s*\}"  # 12^{\text{th}}
    r"|\^\s*\{\s*(?:st|nd|rd|th)\s*\}|\^\s*(?:st|nd|rd|th)\b|(?:st|nd|rd|th)\b)"  # 12^{th}, 12^th, 12th
)
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")


def _unicode(text: str) -> str:
    text = re.sub(r"[⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+", lambda m: "^{" + m.group(0).translate(_SUPERSCRIPTS) + "}", text)
    return "".join(_UNICODE.get(ch, ch) for ch in text)


def strip_trailing_punctuation(text: str) -> str:
    """`5.` -> `5`, `\\{1\\}.` -> `\\{1\\}`, also before a closing `$`; `\\ldots` and `\\cdots` are kept."""
    previous = None
    while previous != text:
        previous = text
        text = text.strip()
        text = re.sub(r"(?<![.\\])[.,;:]+\s*(\$*)$", r"\1", text)
        text = re.sub(r"\\[,;:!]\s*$|\\quad\s*$", "", text)
    return text


def normalize(text: str) -> str:
    """The rules in the module docstring, in an order where each one sees the previous ones' output."""
    text = _unicode(text)
    text = re.sub(r",\s*\\!\s*(?=\d{3}(?!\d))|\{,\}", ",", text)  # `11,\! 111`, `10{,}000`
    text = text.replace("\\!", "")
    text = strip_trailing_punctuation(text)
    text = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _SCI.sub(r"\1\\times10^{\2}", text)
    text = _DANGLING_POINT.sub(r"\1", text)
    text = _ORDINAL.sub(r"\1 ", text)
    text = re.sub(r"\\log(?!\s*_)", r"\\ln", text)
    text = re.sub(r"(?<![A-Za-z\\])i\s*(?:\\cdot\s*)?(\\sqrt\{[^{}]*\})", r"\1 i", text)
    text = re.sub(r"\\gamma(?![A-Za-z_])", r"g_{\\gamma}", text)
    text = re.sub(r"(?<![\\A-Za-z])E_", r"\\mathrm{E}_", text)
    text = re.sub(r"_\{\s*\\([A-Za-z]+)\s*\}", r"_{\1}", text)
    text = re.sub(
        r"_\{\s*\\text\s*\{\s*([^{}]*?)\s*\}\s*\}", lambda m: "_{" + m.group(1).replace(" ", "") + "}", text
    )
    return text.strip()


# --- comparison helpers ---------------------------------------------------------------------------------


def unwrap_text(text: str) -> str:
    """`\\text{(C)}` -> `(C)`, `\\mathrm{SRMC}` -> `SRMC` (innermost groups first)."""
    previous = None
    while previous != text:
        previous = text
        text = _TEXT_CMD.sub(r"\1", text)
    return text.replace("$", "").strip()


_WORDS = re.compile(r"^[A-Za-z][A-Za-z0-9 ]*(?:=[A-Za-z ]+)*$")
_CLOCK = re.compile(r"^\d{1,2}:\d{2}\s*[ap]\.?\s*m\.?$", re.IGNORECASE)


def text_key(gold: str) -> str | None:
    """A gold that is words or a clock time, not math (`\\text{Evelyn}`, `\\text{June 20}`, `MR=SRMC`,
    `\\text{4:30 p.m.}`): its comparison key
    (lower case, no spaces, sides of `=` sorted). None for math, including single letters such as `m`.

    math-verify reads `SRMC` as the product s*r*m*c, so `SMRC` would equal it; words are compared as words."""
    plain = unwrap_text(gold)
    if _CLOCK.match(plain):  # `\text{4:30 p.m.}`: a clock time, compared as "430pm"
        return re.sub(r"[^a-z0-9]", "", plain.lower())
    if not _WORDS.match(plain) or not re.search(r"[A-Za-z]{2,}", plain):
        return None
    wrapped = bool(_TEXT_CMD.search(gold))
    if not wrapped and not re.search(r"[A-Za-z]{3,}", plain.replace(" ", "")):
        return None  # `ab`, `MR` alone: a product of variables, not a word
    return "=".join(sorted(side.replace(" ", "").lower() for side in plain.split("=")))


def answer_text_key(answer: str) -> str:
    plain = unwrap_text(answer)
    plain = re.sub(r"^(?:the\s+)?(?:answer\s+is\s*:?\s*)", "", plain, flags=re.IGNORECASE)
    plain = re.sub(r"[^A-Za-z0-9=]", "", plain)
    return "=".join(sorted(side.lower() for side in plain.split("=")))


_CHOICE = re.compile(r"^\(?([A-E])\)?$")


def choice_letter(gold: str) -> str | None:
    """`\\text{(C)}`, `(C)`, `C` -> `C`; None when the gold is not a multiple-choice letter."""
    match = _CHOICE.match(unwrap_text(gold).replace(" ", ""))
    return match.group(1) if match else None


def answer_choice_letter(answer: str) -> str | None:
    """The letter an answer chose: `(C) Plane`, `\\text{(C)}`, `C`, `\\textbf{(C)}\\ 12` -> `C`."""
    plain = unwrap_text(answer).strip()
    match = re.match(r"^\(?([A-E])\)?(?:$|[\s.:\\)]|(?<=\))\S)", plain)
    return match.group(1) if match else None


def split_top_level(text: str) -> list[str]:
    """Split at commas outside any bracket: `(1,2), 3` -> [`(1,2)`, `3`]. `\\{` and `\\}` count as brackets."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and text.startswith(("\\{", "\\}"), i):
            depth += 1 if text[i + 1] == "{" else -1
            i += 2
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
        i += 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def has_repeated_values(gold: str) -> bool:
    """`-2,-2`: a list whose values repeat, which math-verify would collapse into the set {-2}."""
    parts = [p.replace(" ", "") for p in split_top_level(gold)]
    return len(parts) > 1 and len(set(parts)) < len(parts)


def without_percent(text: str) -> str | None:
    """`35.0\\%` -> `35.0`; None when there is no percent sign. Used to accept 35 == 35.0% == 35%."""
    stripped = re.sub(r"\\?%|\\text\{\s*\\?%\s*\}|\\text\{\s*percent\s*\}|\s*percent\b", "", text)
    return stripped.strip() if stripped != text else None


_TEXT_UNIT = re.compile(
    r"([\w}])(?:\s|\\[,;: ])*\\(?:text|mbox|mathrm|textrm)\s*\{\s*[A-Za-z][A-Za-z .\s]*\}"
    r"(?:\s*\^\s*\{?\d\}?)?\s*$"
)


def strip_text_unit(gold: str) -> str:
    """`\\frac{270}7\\text{ degrees}`, `864 \\mbox{ inches}^2` -> the number: a gold's unit written as text.
    (Golds are read with math-verify's unit removal off, so that bare letters stay variables.)"""
    return _TEXT_UNIT.sub(r"\1", gold).strip()


def number_then_words(answer: str) -> str | None:
    """`12 grade`, `5 students` -> `12`, `5`: a number followed only by plain words (a unit math-verify does
    not know); None otherwise."""
    plain = unwrap_text(answer)
    match = re.match(r"^(-?\d+(?:\.\d+)?)\s+(?:[A-Za-z]{2,}\s*)+$", plain)
    return match.group(1) if match else None
