"""Pulling a final answer out of free text, and deciding when two answers agree.

Small models rarely follow an answer format exactly, so the default strategy
tries the explicit marker first ("Answer: 42", "\\boxed{42}") and falls back to
the last number in the text.

Two answer kinds are structured rather than free text, and `auto` recognises
both before anything else: tool calls (`<tool_call>` blocks, see
`orchestra.tool_calls`), which agree when they call the same function with equal
arguments, and a reply that is wholly a JSON object or array (a `response_format`
reply), which agrees with another of equal parsed value. Both are answered in a
canonical spelling, so votes count them like any other answer.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from orchestra.tool_calls import ANSWER_PREFIX as TOOL_CALL_PREFIX
from orchestra.tool_calls import canonical_json, tool_call_answer

Strategy = Literal["auto", "marker", "boxed", "last_number", "regex", "code", "full", "json", "tool_call"]
#: How two extracted answers are compared: `normalized` strings and numbers, or `math` values
#: (math-verify: `1/2`, `0.5` and `\\frac{1}{2}` agree; see orchestra.math_equivalence).
Comparison = Literal["normalized", "math"]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_LEADING_NUMBER = re.compile(r"^\$?\s*(-?\d[\d,]*(?:\.\d+)?(?:/\d+)?)(?![\d.]*\s*[a-zA-Z(*/+^-]\s*\d)")
_CODE_BLOCK = re.compile(r"```(?:[a-zA-Z0-9_+-]*)\n(.*?)(?:```|$)", re.DOTALL)


class AnswerFormat(BaseModel):
    """How to extract an answer, and how to compare two. `auto`: a tool call, a JSON reply, a
    marker, \\boxed{}, then the last number. `json`: the reply's JSON value (canonical);
    `tool_call`: its tool calls."""

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


def _json_value(text: str, whole_only: bool = False) -> str | None:
    """The canonical JSON of the reply's object or array: the whole text, or (unless
    `whole_only`) the first ```json block in it."""
    candidates = [text.strip()]
    if not whole_only:
        candidates += [b.strip() for b in _CODE_BLOCK.findall(text)]
    for candidate in candidates:
        if candidate[:1] not in ("{", "["):
            continue
        try:
            return canonical_json(json.loads(candidate))
        except ValueError:
            continue
    return None


def extract_answer(text: str, fmt: AnswerFormat = AnswerFormat()) -> str | None:
    """The answer in `text` under `fmt`, or None when there is none."""
    if fmt.strategy == "tool_call":
        return tool_call_answer(text)
    if fmt.strategy == "json":
        return _json_value(text)
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
    structured = tool_call_answer(text) or _json_value(text, whole_only=True)
    if structured is not None:
        return structured
    marked = _after_marker(text, fmt.marker)
    if marked is not None:
        marked = marked.rsplit("=", 1)[-1].strip() or marked  # "3 + 4 = 7" -> "7"
        leading = _LEADING_NUMBER.match(marked)  # "12 apples" -> "12"
        return leading.group(1).replace(",", "") if leading else marked
    boxed = _boxed(text)
    return boxed if boxed is not None else _last_number(text)


def normalize_answer(answer: str | None) -> str | None:
    """Canonical form for comparing answers: numbers by value, JSON objects and arrays by parsed
    value, tool calls as they are (already canonical), text case- and space-folded."""
    if answer is None:
        return None
    if answer.startswith(TOOL_CALL_PREFIX):
        return answer
    if answer.strip()[:1] in ("{", "["):
        try:
            return canonical_json(json.loads(answer))
        except ValueError:
            pass
    text = answer.strip().strip("$").strip()
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return " ".join(text.lower().split()).rstrip(".")
    return str(int(value)) if value.is_integer() else repr(value)
