"""`orchestra serve` with tools, response_format and streaming, driven by the official `openai` client.

The recipes run on the scripted fake backend: what reaches the model and what the
client gets back are checked exactly. The real model's side is tests/test_serve_tools_model.py.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from fake_backend import fake_backend, vote_recipe  # noqa: F401  (fixture)
from orchestra.recipe import Recipe
from orchestra.server import BackgroundServer, create_app
from orchestra.tool_calls import parse_tool_calls

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
    "additionalProperties": False,
}


def one_sample(name: str) -> dict:
    recipe = vote_recipe(name, n=1)
    recipe["nodes"], recipe["output"] = recipe["nodes"][:1], "samples"
    return recipe


@pytest.fixture
def served(fake_backend):
    recipes = [Recipe.model_validate(vote_recipe("vote", n=8)), Recipe.model_validate(one_sample("plain"))]
    with BackgroundServer(create_app(recipes)) as server:
        yield server


@pytest.fixture
def client(served):
    return openai.OpenAI(base_url=served.url, api_key="none", max_retries=0)


def weather_agent(request, prompt, index):
    """Calls get_weather for the city asked about; once the tool has answered, reports it."""
    last = request.messages[-1]
    if last.role == "tool":
        return f"It is {json.loads(last.content)['celsius']} degrees in Paris."
    assert request.tools and request.tools[0]["function"]["name"] == "get_weather"
    return '<tool_call> {"name": "get_weather", "arguments": {"city": "Paris"}} </tool_call>'


def test_a_tool_calling_round_trip(client, fake_backend):
    fake_backend.script = weather_agent
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model="plain", messages=messages, tools=[WEATHER], seed=1)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}

    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"celsius": 18})}]
    second = client.chat.completions.create(model="plain", messages=messages, tools=[WEATHER], seed=1)
    assert second.choices[0].message.content == "It is 18 degrees in Paris."
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    tool_turn = fake_backend.log.calls[-1].prompt.splitlines()
    assert tool_turn[-1] == 'tool: {"celsius": 18}'  # the tool's answer reached the model


def test_the_vote_of_eight_samples_answers_the_majority_tool_call(client, fake_backend):
    cities = ["Lyon", "Paris", "Oslo", "Paris", "Lyon", "Paris", "Paris", "Rome"]
    fake_backend.script = lambda request, prompt, index: (
        f'<tool_call> {{"name": "get_weather", "arguments": {{"city": "{cities[index]}"}}}} </tool_call>'
    )
    reply = client.chat.completions.create(model="vote", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER])
    (call,) = reply.choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_tool_choice_none_leaves_the_text_as_it_is(client, fake_backend):
    fake_backend.script = weather_agent
    reply = client.chat.completions.create(
        model="plain", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER], tool_choice="none"
    )
    assert reply.choices[0].message.tool_calls is None and "<tool_call>" in reply.choices[0].message.content


def test_a_json_schema_reply_parses_and_validates(client, fake_backend):
    asked = []

    def script(request, prompt, index):
        asked.append(request.response_format)
        return '{"city": "Paris", "country": "France"}'

    fake_backend.script = script
    format = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}}
    reply = client.chat.completions.create(
        model="vote", messages=[{"role": "user", "content": "A city, as JSON"}], response_format=format
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), CITY)
    assert asked and all(a == format for a in asked)  # every sample was asked for the format


def test_bad_tool_requests_are_400s(client):
    with pytest.raises(openai.BadRequestError, match="not among the tools"):
        client.chat.completions.create(
            model="plain", messages=[{"role": "user", "content": "hi"}], tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    with pytest.raises(openai.BadRequestError, match="tool_call_id"):
        client.chat.completions.create(model="plain", messages=[{"role": "tool", "content": "18"}])
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.chat.completions.create(
            model="plain", messages=[{"role": "user", "content": "hi"}], response_format={"type": "xml"}
        )


def test_a_streamed_tool_call_arrives_as_tool_call_deltas(client, fake_backend):
    fake_backend.script = weather_agent
    stream = client.chat.completions.create(
        model="plain", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER], stream=True
    )
    chunks = [c for c in stream if c.choices]
    deltas = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
    assert [(d[0].function.name, json.loads(d[0].function.arguments)) for d in deltas] == [("get_weather", {"city": "Paris"})]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_multi_sample_recipe_streams_progress_then_the_answer(served):
    body = {"model": "vote", "messages": [{"role": "user", "content": "Compute 12 + 30 ="}], "stream": True}
    events = []
    with httpx.stream("POST", f"{served.url}/chat/completions", json=body, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[len("data: "):]))
    progress = [e["orchestra"]["progress"] for e in events if "orchestra" in e]
    assert [(p["node"], p["candidates"]) for p in progress] == [("samples", 8), ("vote", progress[1]["candidates"])]
    first_answer = next(i for i, e in enumerate(events) if e["choices"])
    assert first_answer > max(i for i, e in enumerate(events) if "orchestra" in e)  # progress first, then the answer
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text.strip().endswith("42")


def test_tool_calls_parse_only_well_formed_blocks():
    assert parse_tool_calls('<tool_call> {"arguments": {}} </tool_call>')[1] == ()  # no name: not a call
