"""A request's conversation as a Hugging Face chat template takes it, tools included.

A template that knows tools (it reads the `tools` variable: Qwen2.5, Llama 3.1,
Hermes, ...) gets them as transformers documents: `tools=` beside the messages,
assistant `tool_calls` with parsed arguments, `tool` turns as they are. A
template that does not (SmolLM2's) would drop them silently, so the conversation
is spelled out in the Hermes convention instead, in turns every template
renders: the tools in a system turn that asks for `<tool_call>` blocks, the
assistant's calls as those blocks, tool results as `<tool_response>` user turns.
Either way a model's calls come back as `<tool_call>` blocks (`orchestra.tool_calls`).
"""

from __future__ import annotations

import json
from typing import Any

from orchestra.backends.generation import GenerationRequest
from orchestra.tool_calls import render_tool_calls

_INSTRUCTIONS = (
    "You may call one or more functions to assist with the user query. The functions are listed "
    "within <tools></tools>:\n<tools>\n{tools}\n</tools>\n"
    "For each function call, reply with a JSON object holding the function's name and arguments "
    'within <tool_call></tool_call> tags:\n<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def uses_tools(request: GenerationRequest) -> bool:
    return bool(request.tools) or any(m.role == "tool" or m.tool_calls for m in request.messages or ())


def template_inputs(request: GenerationRequest, template: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(messages, extra keyword arguments for `apply_chat_template`)."""
    messages = [m.model_dump() for m in request.messages or ()]
    if not uses_tools(request):
        return messages, {}
    if "tools" in template:
        for message in messages:
            for call in message.get("tool_calls") or ():
                call["function"]["arguments"] = _parsed(call["function"]["arguments"])
        return messages, ({"tools": list(request.tools)} if request.tools else {})
    return _spelled_out(request), {}


def _parsed(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _spelled_out(request: GenerationRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in request.messages or ():
        if message.role == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{message.content}\n</tool_response>"})
        elif message.tool_calls:
            text = "\n".join(part for part in (message.content, render_tool_calls(message.tool_calls)) if part)
            out.append({"role": "assistant", "content": text})
        else:
            out.append({"role": message.role, "content": message.content})
    if request.tools:
        listed = "\n".join(json.dumps(tool) for tool in request.tools)
        preamble = _INSTRUCTIONS.format(tools=listed)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + preamble}
        else:
            out.insert(0, {"role": "system", "content": preamble})
    return out
