"""Tool calls as text: one spelling every backend, candidate and vote shares.

A model that calls a tool writes Hermes-style blocks (SmolLM2, Qwen2.5, Hermes
and most open chat templates use them)::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Candidates carry text, so a tool call travels through recipes as these blocks:
the local engine and vLLM generate them, the `openai` backend writes a server's
structured `tool_calls` back into them, and `orchestra serve` parses them out of
the final text into OpenAI's `tool_calls`. Two calls agree when they name the
same function with equal (parsed) arguments; `tool_call_answer` is that identity
as a string, so voting compares tool calls like any other answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)

#: The prefix of every tool-call answer, so normalising and scoring can tell one from text.
ANSWER_PREFIX = "tool_call:"


class FunctionCall(BaseModel):
    """OpenAI's `function` of a tool call: its arguments are a JSON string."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    arguments: str = "{}"


class ToolCall(BaseModel):
    """One tool call in OpenAI's wire shape (an assistant message's `tool_calls` item)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    @property
    def arguments(self) -> Any:
        """The arguments parsed (a string that is not JSON stays a string)."""
        try:
            return json.loads(self.function.arguments)
        except ValueError:
            return self.function.arguments


def render_tool_calls(calls: list[ToolCall] | tuple[ToolCall, ...]) -> str:
    """The blocks a model writes for `calls`, one per call."""
    return "\n".join(
        "<tool_call>\n" + json.dumps({"name": c.function.name, "arguments": c.arguments}) + "\n</tool_call>"
        for c in calls
    )


def _call_id(name: str, arguments: str, index: int) -> str:
    """A stable id (the same text gives the same ids, so seeded replies repeat exactly)."""
    return "call_" + hashlib.sha256(f"{index}:{name}:{arguments}".encode()).hexdigest()[:24]


def parse_tool_calls(text: str) -> tuple[str, tuple[ToolCall, ...]]:
    """(the text outside the blocks, the calls in it). A block whose JSON does not parse, or
    lacks a string `name`, is not a call and stays in the text."""
    calls: list[ToolCall] = []
    kept: list[str] = []
    last = 0
    for match in _BLOCK.finditer(text):
        try:
            body = json.loads(match.group(1))
        except ValueError:
            continue
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            continue
        arguments = body.get("arguments", body.get("parameters", {}))
        encoded = arguments if isinstance(arguments, str) else json.dumps(arguments)
        calls.append(ToolCall(id=_call_id(body["name"], encoded, len(calls)), function=FunctionCall(name=body["name"], arguments=encoded)))
        kept.append(text[last : match.start()])
        last = match.end()
    kept.append(text[last:])
    return "".join(kept).strip(), tuple(calls)


def canonical_json(value: Any) -> str:
    """One spelling per JSON value: equal values (1 and 1.0 included), whatever their key order
    and spacing, match."""
    return json.dumps(_integral(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def tool_call_answer(text: str) -> str | None:
    """The calls in `text` as an answer (`tool_call:` + canonical JSON of [{name, arguments}]),
    or None when it makes none."""
    _, calls = parse_tool_calls(text)
    if not calls:
        return None
    return ANSWER_PREFIX + canonical_json([{"name": c.function.name, "arguments": c.arguments} for c in calls])


def without_arguments(answer: str | None, ignored: tuple[str, ...] | list[str]) -> str | None:
    """A tool-call answer with the named arguments left out (a request id, a timestamp), so calls
    that differ only there agree; any other answer is returned as it is."""
    if not ignored or answer is None or not answer.startswith(ANSWER_PREFIX):
        return answer
    calls = json.loads(answer[len(ANSWER_PREFIX) :])
    for call in calls:
        if isinstance(call.get("arguments"), dict):
            call["arguments"] = {k: v for k, v in call["arguments"].items() if k not in ignored}
    return ANSWER_PREFIX + canonical_json(calls)


def forced_call_schema(tools: list[dict[str, Any]] | tuple[dict[str, Any], ...], tool_choice: Any) -> dict[str, Any] | None:
    """The JSON schema of the one call `tool_choice` forces ("required", or a named function),
    for constrained decoding; None when the model may answer in text ("auto", "none", unset)."""
    if not tools or tool_choice in (None, "auto", "none"):
        return None
    functions = [t.get("function", {}) for t in tools if t.get("type", "function") == "function"]
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        functions = [f for f in functions if f.get("name") == wanted]
        if not functions:
            raise ValueError(f"tool_choice names the function {wanted!r}, which is not among the tools")
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": f["name"]},
                "arguments": f.get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in functions
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}
