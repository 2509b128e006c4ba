"""`orchestra serve` driven by the official `openai` client: chat, streaming, limits, errors.

The recipes here run on the scripted fake backend, so answers and token counts
are known exactly; tests/test_serve_model.py serves the real default model.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import yaml

from fake_backend import TRIGGER, FakeBackend, fake_backend, sample_tokens, vote_recipe  # noqa: F401  (fixture)
from orchestra.recipe import Recipe
from orchestra.server import BackgroundServer, ServeSettings, create_app

KEY = "sk-serve-test"
QUESTION = [{"role": "user", "content": "Compute 12 + 30 ="}]


@pytest.fixture
def served(fake_backend):
    """A server of three recipes with a key: vote (sample 4 + majority), one (a single sample +
    majority), plain (a single sample, its text the reply)."""
    settings = ServeSettings(api_key=KEY, max_n=3, max_tokens_per_request=500, max_request_bytes=20_000)
    recipes = [Recipe.model_validate(vote_recipe("vote", n=4)), Recipe.model_validate(vote_recipe("one", n=1)),
               Recipe.model_validate(plain_recipe("plain"))]
    with BackgroundServer(create_app(recipes, settings)) as server:
        yield server


@pytest.fixture
def client(served):
    return openai.OpenAI(base_url=served.url, api_key=KEY, max_retries=0)


def plain_recipe(name: str) -> dict:
    """One sample, its text the reply: nothing between the model's reply and the client."""
    recipe = vote_recipe(name, n=1)
    recipe["nodes"], recipe["output"] = recipe["nodes"][:1], "samples"
    return recipe


def spent_by_backend() -> tuple[int, int]:
    """(prompt, completion) tokens of every call the fake backend answered."""
    prompt = completion = 0
    for call in FakeBackend.log.calls:
        prompt += len(call.prompt.split())
        completion += sum(
            min(call.max_tokens, sample_tokens(call.prompt, call.seed, call.first_index + i)) for i in range(call.n)
        )
    return prompt, completion


def test_models_and_health(served, client):
    assert sorted(m.id for m in client.models.list().data) == ["one", "plain", "vote"]
    assert client.models.retrieve("vote").owned_by == "orchestra"
    health = httpx.get(served.url.removesuffix("/v1") + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"  # no key needed


def test_chat_runs_the_recipe_and_usage_counts_every_token(client):
    reply = client.chat.completions.create(model="vote", messages=QUESTION, seed=7)
    [choice] = reply.choices
    assert choice.message.content.endswith("Answer: 42") and choice.finish_reason == "stop"
    [call] = FakeBackend.log.calls
    assert call.n == 4  # the recipe's 4 samples, one batched call
    prompt, completion = spent_by_backend()
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt, completion)
    assert reply.usage.total_tokens == prompt + completion
    assert reply.model_extra["orchestra"]["answers"] == ["42"]

    again = client.chat.completions.create(model="vote", messages=QUESTION, seed=7)
    assert again.choices[0].message.content == choice.message.content  # a seed makes a request repeatable


def test_n_choices_are_separate_runs_and_their_usage_adds_up(client):
    reply = client.chat.completions.create(model="one", messages=QUESTION, n=3)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert len(FakeBackend.log.calls) == 3 and len({c.seed for c in FakeBackend.log.calls}) == 3
    assert reply.usage.completion_tokens == spent_by_backend()[1]


def test_streaming_sends_the_final_answer_and_the_usage(client):
    plain = client.chat.completions.create(model="vote", messages=QUESTION, seed=3)
    stream = client.chat.completions.create(
        model="vote", messages=QUESTION, seed=3, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 5  # word by word
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == plain.usage.total_tokens


def test_max_tokens_caps_all_the_recipes_calls_together(client):
    reply = client.chat.completions.create(model="vote", messages=QUESTION, max_tokens=9)
    assert reply.usage.completion_tokens <= 9
    [call] = FakeBackend.log.calls
    assert call.max_tokens == 2  # 4 samples shrunk to fit 9 tokens


def test_requests_run_concurrently_on_one_shared_backend(client):
    # every call waits until four are in the backend at once: reached only if requests run concurrently
    FakeBackend.hold = lambda request, prompt: FakeBackend.log.max_in_flight < 4
    replies: list = []

    def ask(i: int) -> None:
        replies.append(client.chat.completions.create(model="one", messages=[{"role": "user", "content": f"Compute {i} + 1 ="}]))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(replies) == 8 and FakeBackend.log.instances == 1  # both recipes name one model: one backend
    assert FakeBackend.log.max_in_flight >= 4  # calls of different requests were in the backend together


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"model": "nope"}, openai.NotFoundError, "model"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, openai.BadRequestError, "messages.0.role"),
        ({"messages": []}, openai.BadRequestError, "messages"),
        ({"n": 4}, openai.BadRequestError, "n"),
        ({"max_tokens": 501}, openai.BadRequestError, "max_tokens"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
         openai.BadRequestError, "messages"),
    ],
)
def test_bad_requests_get_openai_errors(client, kwargs, error, param):
    request = {"model": "vote", "messages": QUESTION, **kwargs}
    with pytest.raises(error) as info:
        client.chat.completions.create(**request)
    assert info.value.body["param"] == param and info.value.body["type"] == "invalid_request_error"
    assert FakeBackend.log.calls == []  # refused before any token was spent


def test_auth_size_and_json_errors_have_the_openai_shape(served):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.url, api_key="wrong", max_retries=0).models.list()
    big = httpx.post(served.url + "/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                     json={"model": "vote", "messages": [{"role": "user", "content": "x" * 30_000}]})
    assert big.status_code == 413 and "20000" in big.json()["error"]["message"]
    broken = httpx.post(served.url + "/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, content=b"{oops")
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
    missing = httpx.get(served.url + "/nowhere")
    assert missing.status_code == 404 and "error" in missing.json()


def test_a_failing_recipe_is_a_server_error(client):
    with pytest.raises(openai.InternalServerError, match="recipe failed"):
        client.chat.completions.create(model="vote", messages=[{"role": "user", "content": f"{TRIGGER} 1 + 1 ="}])
    with pytest.raises(openai.APIError, match="recipe failed"):
        list(client.chat.completions.create(model="vote", stream=True,
                                            messages=[{"role": "user", "content": f"{TRIGGER} 1 + 1 ="}]))


def test_serve_cli_refuses_bad_setups_before_listening(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from orchestra.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: same\nnodes: [{id: a, technique: sample}]\n")
    twice = CliRunner().invoke(app, ["serve", str(recipe), str(recipe)])
    assert twice.exit_code == 2 and "share the name same" in twice.output
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    keyless = CliRunner().invoke(app, ["serve", str(recipe), "--api-key-env", "NO_SUCH_KEY_VAR"])
    assert keyless.exit_code == 2 and "NO_SUCH_KEY_VAR" in keyless.output


def test_a_reply_cut_by_max_tokens_finishes_for_length(client):
    whole = client.chat.completions.create(model="plain", messages=QUESTION, seed=1)
    assert whole.choices[0].finish_reason == "stop" and "Answer:" in whole.choices[0].message.content
    cut = client.chat.completions.create(model="plain", messages=QUESTION, seed=1, max_tokens=3)
    assert cut.choices[0].message.content == "Let me add" and cut.choices[0].finish_reason == "length"
    chunks = list(client.chat.completions.create(model="plain", messages=QUESTION, seed=1, max_tokens=3, stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    # a vote whose samples were all cut before their answer has nothing to say: cut, not finished
    empty = client.chat.completions.create(model="vote", messages=QUESTION, max_tokens=9)
    assert empty.choices[0].message.content == "" and empty.choices[0].finish_reason == "length"


def test_a_vote_for_a_cut_answer_finishes_for_length(client):
    FakeBackend.script = lambda request, prompt, index: "Answer: 42 and then some more words"
    reply = client.chat.completions.create(model="vote", messages=QUESTION, max_tokens=8)  # 4 samples x 2 tokens
    assert reply.choices[0].message.content == "Answer: 42" and reply.choices[0].finish_reason == "length"
    whole = client.chat.completions.create(model="vote", messages=QUESTION)
    assert whole.choices[0].finish_reason == "stop"


def test_a_prompt_longer_than_the_context_is_a_400_before_anything_runs(served, client):
    long = [{"role": "user", "content": "x " * 4100}]  # the fake model's context is 4096 tokens
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="vote", messages=long, stream=stream)
        assert info.value.body["code"] == "context_length_exceeded" and info.value.body["param"] == "messages"
        assert "4096" in info.value.body["message"]
    assert FakeBackend.log.calls == []


def test_messages_a_model_cannot_render_are_a_400(client, monkeypatch):
    def render(self, request):
        raise ValueError("Conversation roles must alternate user/assistant/user/assistant")

    monkeypatch.setattr(FakeBackend, "render", render)
    with pytest.raises(openai.BadRequestError, match="roles must alternate") as info:
        client.chat.completions.create(model="vote", messages=QUESTION)
    assert info.value.body["param"] == "messages" and FakeBackend.log.calls == []


def test_a_stream_whose_run_fails_sends_the_error_then_done(served):
    body = {"model": "vote", "stream": True, "messages": [{"role": "user", "content": f"{TRIGGER} 1 + 1 ="}]}
    reply = httpx.post(served.url + "/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, json=body)
    events = [line.removeprefix("data: ") for line in reply.text.splitlines() if line.startswith("data: ")]
    assert reply.status_code == 200 and len(events) == 2
    assert json.loads(events[0])["error"]["type"] == "server_error" and events[1] == "[DONE]"


def test_the_server_token_limit_bounds_a_request_over_all_its_choices(fake_backend):
    settings = ServeSettings(max_n=3, max_tokens_per_request=12)
    with BackgroundServer(create_app([Recipe.model_validate(plain_recipe("plain"))], settings)) as server:
        client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)
        reply = client.chat.completions.create(model="plain", messages=QUESTION, n=3)  # 12 tokens shared: 4 each
        assert sorted(call.max_tokens for call in FakeBackend.log.calls) == [4, 4, 4]
        assert reply.usage.completion_tokens == 12 and {c.finish_reason for c in reply.choices} == {"length"}
        with pytest.raises(openai.BadRequestError, match="each of n=3 choices") as info:
            client.chat.completions.create(model="plain", messages=QUESTION, n=3, max_tokens=5)  # 15 > 12
        assert info.value.body["param"] == "max_tokens"
        within = client.chat.completions.create(model="plain", messages=QUESTION, n=2, max_tokens=6)
        assert within.usage.completion_tokens <= 12


def test_fifty_concurrent_clients_each_get_their_own_answer(client):
    def ask(i: int):
        return client.chat.completions.create(model="one", messages=[{"role": "user", "content": f"Compute {i} + 100 ="}])

    with ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(ask, range(50)))
    assert [r.model_extra["orchestra"]["answers"] for r in replies] == [[str(i + 101)] for i in range(50)]
    assert len({r.id for r in replies}) == 50 and len(FakeBackend.log.calls) == 50


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_goes_away_stops_the_work(served, stream):
    FakeBackend.delay = 3600.0  # the model call would never finish by itself
    body = json.dumps({"model": "one", "stream": stream, "messages": QUESTION}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {served.host}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((served.host, served.port)) as connection:
        connection.sendall(head + body)
        _wait_until(lambda: FakeBackend.log.in_flight == 1)
    _wait_until(lambda: FakeBackend.log.in_flight == 0)  # cancelled, not left running for an hour
    assert len(FakeBackend.log.calls) == 1


def _wait_until(condition, seconds: float = 60.0) -> None:
    """Wait for an event the test caused (never for time to pass); fail if it never comes."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the awaited event did not happen"
        time.sleep(0.01)


def test_serve_cli_fails_in_one_line_when_the_port_is_taken(tmp_path, fake_backend):
    from typer.testing import CliRunner

    from orchestra.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(plain_recipe("plain")))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", str(recipe), "--port", str(port)])
    assert result.exit_code == 2 and f"127.0.0.1:{port} is already in use" in result.output
    assert "serving" not in result.output and "Traceback" not in result.output
    assert FakeBackend.log.instances == 0  # refused before loading the model
