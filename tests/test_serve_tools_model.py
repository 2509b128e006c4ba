"""`orchestra serve` on the real default model (SmolLM2-135M, float32, seeded), driven by the
official `openai` client: constrained JSON replies, a tool-calling round trip, token streaming.

SmolLM2's chat template knows nothing of tools, so the tools are spelled out in a
system turn (backends/chat_rendering.py); left to itself (tool_choice "auto") the
135M model answers in prose rather than calling them. The round trip therefore
forces the call (a named tool_choice): the engine decodes the call's JSON under
the tool's parameter schema. The answer after the tool's result is the model's own.
"""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from orchestra.recipe import Recipe
from orchestra.server import BackgroundServer, create_app

pytestmark = pytest.mark.model

MODEL = {"m": {"backend": "local", "model": "smollm2-135m-instruct", "dtype": "float32"}}
PLAIN = {"name": "plain", "models": MODEL, "seed": 0,
         "nodes": [{"id": "samples", "technique": "sample", "params": {"n": 1, "temperature": 0.0, "max_tokens": 48}}]}
VOTE = {"name": "vote", "models": MODEL, "seed": 0,
        "nodes": [{"id": "samples", "technique": "sample", "params": {"n": 4, "temperature": 0.8, "max_tokens": 48}},
                  {"id": "vote", "technique": "majority_vote", "inputs": ["samples"]}]}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 24}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 24}, "is_capital": {"type": "boolean"}},
    "required": ["city", "is_capital"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def client():
    recipes = [Recipe.model_validate(PLAIN), Recipe.model_validate(VOTE)]
    with BackgroundServer(create_app(recipes), startup_timeout=300) as server:
        yield openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=600)


@pytest.mark.parametrize("recipe", ["plain", "vote"])
def test_a_json_schema_reply_parses_and_validates(client, recipe):
    reply = client.chat.completions.create(
        model=recipe,
        messages=[{"role": "user", "content": "Name the largest city in France, as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": CITY}},
        seed=3,
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), CITY)
    if recipe == "vote":  # the four samples voted on their parsed value, kept canonical as the answer
        assert reply.model_extra["orchestra"]["answers"][0] == json.dumps(
            json.loads(reply.choices[0].message.content), sort_keys=True, separators=(",", ":"))


def test_a_forced_tool_call_round_trip(client):
    messages = [{"role": "user", "content": "What is the weather in Paris right now?"}]
    forced = {"type": "function", "function": {"name": "get_weather"}}
    first = client.chat.completions.create(model="plain", messages=messages, tools=[WEATHER], tool_choice=forced, seed=1)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18, "sky": "sunny"})}]
    answer = client.chat.completions.create(model="plain", messages=messages, tools=[WEATHER], seed=1).choices[0]
    assert answer.finish_reason in ("stop", "length") and not answer.message.tool_calls
    assert answer.message.content.strip()


def test_a_single_sample_recipe_streams_its_tokens_as_decoded(client):
    messages = [{"role": "user", "content": "Say something about the sea."}]
    whole = client.chat.completions.create(model="plain", messages=messages, seed=7).choices[0].message.content
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="plain", messages=messages, seed=12345, stream=True) if c.choices]
    again = client.chat.completions.create(model="plain", messages=messages, seed=12345).choices[0].message.content
    assert "".join(pieces) == again  # a greedy recipe: the stream spells the reply exactly
    assert whole == again
    # tokens, not the words a finished reply is cut into: those never start with a space
    assert any(p.startswith(" ") and p.strip() for p in pieces)
