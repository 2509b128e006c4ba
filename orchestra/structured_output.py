"""OpenAI's `response_format`: what it asks for, read the same way everywhere.

Requests, problems and recipe nodes carry it in OpenAI's own shape
(`{"type": "json_object"}`, `{"type": "json_schema", "json_schema": {"name", "schema",
"strict"}}`), so remote backends pass it on untouched; the local engine turns it
into the JSON schema it constrains decoding to (`schema_of`).

A `tool_choice` that forces a call ("required", or a named function) is a
constraint too: local engines decode the call's JSON under its schema and wrap
it in the `<tool_call>` block a model would write (`DecodingConstraint`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestra.tool_calls import forced_call_schema

#: What `json_object` means to a constrained decoder: any JSON object.
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def check_response_format(value: Any) -> dict[str, Any] | None:
    """`value` if it is a response_format this project understands, else a ValueError saying why."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise ValueError("response_format must be {type: text | json_object | json_schema, ...}")
    if value["type"] == "json_schema":
        block = value.get("json_schema")
        if not isinstance(block, dict) or not isinstance(block.get("schema", {}), dict):
            raise ValueError("response_format json_schema needs {json_schema: {name: ..., schema: {...}}}")
    return value


def schema_of(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema replies must match, or None for free text."""
    if response_format is None or response_format.get("type") == "text":
        return None
    if response_format["type"] == "json_object":
        return ANY_OBJECT
    return response_format["json_schema"].get("schema") or ANY_OBJECT


@dataclass(frozen=True)
class DecodingConstraint:
    """What an engine that constrains decoding must enforce for one request."""

    #: The JSON schema the generated text must match.
    schema: dict[str, Any]
    #: The text is a forced tool call's JSON: `completed` wraps it in its `<tool_call>` block.
    tool_call: bool = False

    def completed(self, text: str) -> str:
        return f"<tool_call>\n{text}\n</tool_call>" if self.tool_call else text

    @classmethod
    def of(cls, request: Any) -> DecodingConstraint | None:
        """The constraint of a `GenerationRequest` (typed loosely: this module sits below the
        backends): a forced tool call first, else its response_format; None: free text."""
        forced = forced_call_schema(request.tools or (), request.tool_choice)
        if forced is not None:
            return cls(forced, tool_call=True)
        schema = schema_of(request.response_format)
        return cls(schema) if schema is not None else None
