"""Pulling a final answer out of free text, and deciding when two answers agree.

Small models rarely follow an answer format exactly, so the default strategy
tries the explicit marker first ("Answer: 42", "\\boxed{42}") and falls back to
the last number in the text.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

Strategy = Literal["auto", "marker", "boxed", "last_number", "regex", "code", "full"]
#: How two extracted answers are compared: `normalized` strings and numbers, or `math` values
#: (math-verify: `1/2`, `0.5` and `\\frac{1}{2}` agree; see orchestra.math_equivalence).
Comparison = Literal["normalized", "math"]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_LEADING_NUMBER = re.compile(r"^\$?\s*(-?\d[\d,]*(?:\.\d+)?(?:/\d+)?)(?![\d.]*\s*[a-zA-Z(*/+^-]\s*\d)")
_CODE_BLOCK = re.compile(r"```(?:[a-zA-Z0-9_+-]*)\n(.*?)(?:```|$)", re.DOTALL)


class AnswerFormat(BaseModel):
    """How to extract an answer, and how to compare two. `auto`: marker, then \\boxed{}, then the last number."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Strategy = "auto"
    marker: str = "Answer:"
    pattern: str | None = None  # for `regex`: group 1 (or the whole match) is the answer
    compare: Comparison = "normalized"


_QUOTES = "'\"`\u2019\u201d"


def _after_marker(text: str, marker: str) -> str | None:
    """What follows the last *used* marker. A marker right before a closing quote is only
    mentioned ("write 'Answer: ' followed by the final answer", a small model echoing its
    instructions), so it does not count."""
    lowered, wanted = text.lower(), marker.lower()
    index = lowered.rfind(wanted)
    while index >= 0 and text[index + len(marker):].lstrip(" ")[:1] in tuple(_QUOTES):
        index = lowered.rfind(wanted, 0, index)
    if index < 0:
        return None
    rest = text[index + len(marker):].strip()
    line = rest.splitlines()[0].strip() if rest else ""
    for _ in range(2):  # "**12**." -> "12"
        line = line.strip("*` ").rstrip(".").strip()
    return line or None


def _boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    begin = i
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[begin : i - 1].strip() if depth == 0 else None


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def extract_answer(text: str, fmt: AnswerFormat = AnswerFormat()) -> str | None:
    """The answer in `text` under `fmt`, or None when there is none."""
    if fmt.strategy == "marker":
        return _after_marker(text, fmt.marker)
    if fmt.strategy == "boxed":
        return _boxed(text)
    if fmt.strategy == "last_number":
        return _last_number(text)
    if fmt.strategy == "regex":
        if not fmt.pattern:
            raise ValueError("answer strategy 'regex' needs a pattern")
        matches = list(re.finditer(fmt.pattern, text, re.DOTALL))
        if not matches:
            return None
        last = matches[-1]
        return (last.group(1) if last.groups() else last.group(0)).strip()
    if fmt.strategy == "code":
        blocks = _CODE_BLOCK.findall(text)
        return blocks[0] if blocks else text
    if fmt.strategy == "full":
        return text.strip()
    marked = _after_marker(text, fmt.marker)
    if marked is not None:
        marked = marked.rsplit("=", 1)[-1].strip() or marked  # "3 + 4 = 7" -> "7"
        leading = _LEADING_NUMBER.match(marked)  # "12 apples" -> "12"
        return leading.group(1).replace(",", "") if leading else marked
    boxed = _boxed(text)
    return boxed if boxed is not None else _last_number(text)


def normalize_answer(answer: str | None) -> str | None:
    """Canonical form for comparing answers: numbers by value, text case- and space-folded."""
    if answer is None:
        return None
    text = answer.strip().strip("$").strip()
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return " ".join(text.lower().split()).rstrip(".")
    return str(int(value)) if value.is_integer() else repr(value)
