"""Tool calls and JSON replies as answers: parsed from text, compared by value, voted on."""

from __future__ import annotations

import json

import pytest

from fake_backend import fake_backend, vote_recipe  # noqa: F401  (fixture)
from orchestra import api
from orchestra.answers import AnswerFormat, extract_answer, normalize_answer
from orchestra.backends import GenerationRequest
from orchestra.backends.chat_rendering import template_inputs
from orchestra.problem import Message, Problem
from orchestra.recipe import Recipe
from orchestra.structured_output import DecodingConstraint
from orchestra.tool_calls import FunctionCall, ToolCall, forced_call_schema, parse_tool_calls, render_tool_calls

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def call_text(name: str, **arguments) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def test_tool_call_blocks_parse_and_render_back():
    text = "Let me look.\n" + call_text("get_weather", city="Paris") + "\n" + call_text("get_time", zone="CET")
    content, calls = parse_tool_calls(text)
    assert content == "Let me look."
    assert [(c.function.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "CET"})]
    assert parse_tool_calls(render_tool_calls(calls))[1] == calls  # same text, same ids
    assert parse_tool_calls("<tool_call>{not json}</tool_call>") == ("<tool_call>{not json}</tool_call>", ())


def test_tool_calls_agree_on_function_and_parsed_arguments_only():
    a = extract_answer('<tool_call>{"name": "f", "arguments": {"x": 1, "y": [1, 2]}}</tool_call>')
    b = extract_answer('<tool_call>\n{"arguments": {"y": [1,2], "x": 1.0}, "name": "f"}\n</tool_call> done')
    other = extract_answer('<tool_call>{"name": "f", "arguments": {"x": 2, "y": [1, 2]}}</tool_call>')
    assert a == b != other
    assert a.startswith("tool_call:") and normalize_answer(a) == a


def test_json_replies_compare_by_parsed_value():
    a = extract_answer('{"city": "Paris", "n": 2}')
    b = extract_answer('{ "n": 2,\n  "city": "Paris" }')
    assert a == b == normalize_answer(b) and a != extract_answer('{"city": "paris", "n": 2}')
    assert extract_answer("```json\n[1, 2]\n```", AnswerFormat(strategy="json")) == "[1,2]"
    assert extract_answer("The answer is 42") == "42"  # free text is unchanged


def test_a_forced_call_is_a_schema_and_completes_as_a_block():
    schema = forced_call_schema([WEATHER], {"type": "function", "function": {"name": "get_weather"}})
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert forced_call_schema([WEATHER], "auto") is None
    request = GenerationRequest(messages=(Message(role="user", content="hi"),), tools=(WEATHER,), tool_choice="required")
    constraint = DecodingConstraint.of(request)
    assert parse_tool_calls(constraint.completed('{"name":"get_weather","arguments":{"city":"Oslo"}}'))[1][0].arguments == {"city": "Oslo"}
    with pytest.raises(ValueError, match="not among the tools"):
        forced_call_schema([WEATHER], {"type": "function", "function": {"name": "nope"}})


def test_templates_without_tools_get_the_conversation_spelled_out():
    call = ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Paris"}'))
    request = GenerationRequest(
        messages=(
            Message(role="user", content="Weather in Paris?"),
            Message(role="assistant", content="", tool_calls=(call,)),
            Message(role="tool", content="18 C", tool_call_id="call_1"),
        ),
        tools=(WEATHER,),
    )
    plain, extra = template_inputs(request, "{% for m in messages %}{{ m.content }}{% endfor %}")
    assert extra == {} and plain[0]["role"] == "system" and "get_weather" in plain[0]["content"]
    assert parse_tool_calls(plain[2]["content"])[1][0].arguments == {"city": "Paris"}
    assert plain[3] == {"role": "user", "content": "<tool_response>\n18 C\n</tool_response>"}
    native, extra = template_inputs(request, "{{ tools }}{% for m in messages %}{{ m.content }}{% endfor %}")
    assert extra == {"tools": [WEATHER]} and native[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert native[2] == {"role": "tool", "content": "18 C", "tool_call_id": "call_1"}
    assert Message(role="user", content="x").model_dump() == {"role": "user", "content": "x"}  # unset fields left out


def _vote_over(script, fake_backend, ignore: list[str] | None = None, n: int = 8):
    recipe = vote_recipe("vote", n=n)
    if ignore is not None:
        recipe["nodes"][1]["params"] = {"ignore_arguments": ignore}
    fake_backend.script = script
    problem = Problem(id="p", messages=(Message(role="user", content="Weather in Paris?"),), tools=(WEATHER,))
    return api.run(Recipe.model_validate(recipe), problems=[problem], cache=False).results[0]


def test_a_vote_over_eight_samples_returns_the_majority_tool_call(fake_backend):
    cities = ["Lyon", "Paris", "Paris", "Oslo", "Paris", "Lyon", "Paris", "Paris"]  # Paris 5, Lyon 2, Oslo 1
    seen = []

    def script(request, prompt, index):
        seen.append(request.tools)
        return call_text("get_weather", city=cities[index])

    result = _vote_over(script, fake_backend)
    assert seen and all(tools == (WEATHER,) for tools in seen)  # the problem's tools reached the model
    assert parse_tool_calls(result.text)[1][0].arguments == {"city": "Paris"}
    assert json.loads(result.answer.removeprefix("tool_call:")) == [{"name": "get_weather", "arguments": {"city": "Paris"}}]


def test_a_vote_can_ignore_named_arguments(fake_backend):
    # Oslo 3 times with different request ids, Paris twice with the same one
    calls = [("Oslo", 1), ("Paris", 7), ("Oslo", 2), ("Paris", 7), ("Oslo", 3)]

    def script(request, prompt, index):
        city, request_id = calls[index]
        return call_text("get_weather", city=city, request_id=request_id)

    counted = _vote_over(script, fake_backend, n=5)
    assert parse_tool_calls(counted.text)[1][0].arguments["city"] == "Paris"
    ignoring = _vote_over(script, fake_backend, ignore=["request_id"], n=5)
    assert parse_tool_calls(ignoring.text)[1][0].arguments["city"] == "Oslo"
