"""The `openai` backend against a scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from fake_openai_server import QUESTION, FakeOpenAIServer, ask, server  # noqa: F401 - server is a fixture
from orchestra.backends import BackendUnavailable, GenerationRequest
from orchestra.backends.endpoint_pool import RemoteError, ServerUnavailable, retry_after_seconds
from orchestra.backends.openai_http import ContextLengthExceeded, OpenAIBackend
from orchestra.errors import RecipeError
from orchestra.problem import Message
from orchestra.backends import ModelSpec
from orchestra.recipe import Recipe



def backend_for(*servers: FakeOpenAIServer, **options) -> OpenAIBackend:
    settings = {"endpoints": [s.url for s in servers], "backoff": 0.01, "max_backoff": 2.0, "timeout": 5.0, **options}
    return OpenAIBackend(ModelSpec(backend="openai", model="fake-served", openai=settings))


def test_chat_call_with_n_seed_logprobs_and_usage(server):
    backend = backend_for(server)
    result = ask(backend, n=3, seed=5, first_index=2, logprobs=True, max_tokens=64, stop=("\n\n",), top_k=20)
    [(path, body, _)] = server.requests
    assert path == "/v1/chat/completions"
    assert body["n"] == 3 and body["model"] == "fake-served" and body["logprobs"] is True and body["top_logprobs"] == 1
    assert body["stop"] == ["\n\n"] and body["top_k"] == 20 and body["max_tokens"] == 64
    assert body["seed"] == GenerationRequest(messages=QUESTION, seed=5, first_index=2).sample_seed(0)
    assert [c.text.split()[-1] for c in result.completions] == ["8", "7", "9"]  # 7 + OFFSETS[0..2]
    # per-sample token counts come from the logprobs; the totals from the server's usage block
    assert [c.completion_tokens for c in result.completions] == [11, 12, 13]
    assert all(len(c.logprobs) == c.completion_tokens for c in result.completions)
    assert result.prompt_tokens == len("user: Compute 3 + 4 =")  # the server's count, not the estimate
    assert backend.count_prompt_tokens(GenerationRequest(messages=QUESTION)) == 6  # ~4 characters a token
    assert result.usage.completion_tokens == 36 and result.usage.estimated_calls == 0
    assert backend.accepts_n is True


def test_n_choices_are_all_counted_when_usage_counts_only_the_first(server):
    server.usage = "first choice"  # what llama.cpp's llama-server reports for n > 1
    result = ask(backend_for(server), n=3, seed=5, first_index=2, logprobs=True, max_tokens=64)
    assert [c.completion_tokens for c in result.completions] == [11, 12, 13]
    assert result.usage.completion_tokens == 36  # not the server's 11


def test_raw_prompt_goes_to_the_completions_endpoint(server):
    result = ask(backend_for(server), messages=None, prompt="Compute 1 + 1 = ", logprobs=True, max_tokens=5)
    [(path, body, _)] = server.requests
    assert path == "/v1/completions" and body["prompt"] == "Compute 1 + 1 = " and body["logprobs"] == 1
    assert result.completions[0].finish_reason == "length" and result.completions[0].completion_tokens == 5


def test_a_server_that_refuses_n_gets_parallel_single_calls(server):
    server.accepts_n = False
    backend = backend_for(server)
    result = ask(backend, n=3, seed=1, temperature=0.7)
    bodies = server.completions()
    assert bodies[0]["n"] == 3 and all("n" not in b for b in bodies[1:]) and len(bodies) == 4
    request = GenerationRequest(messages=QUESTION, seed=1)
    assert sorted(b["seed"] for b in bodies[1:]) == sorted(request.sample_seed(k) for k in range(3))
    assert len(result.completions) == 3 and backend.accepts_n is False
    ask(backend, n=2, seed=1)  # remembered: straight to single calls
    assert [b.get("n") for b in server.completions()[4:]] == [None, None]


def test_a_server_that_ignores_n_gets_the_missing_samples_one_by_one(server):
    server.ignores_n = True
    backend = backend_for(server)
    result = ask(backend, n=3, seed=1)
    assert len(result.completions) == 3 and len(server.completions()) == 3 and backend.accepts_n is False
    assert len({c.text for c in result.completions}) == 3  # different seeds, different samples


def test_usage_left_out_is_estimated_and_marked(server):
    server.usage = False
    result = ask(backend_for(server, logprobs=False), n=2, seed=3)
    assert result.usage.estimated_calls == 1
    assert result.prompt_tokens > 0 and all(c.completion_tokens > 0 for c in result.completions)
    assert all(c.logprobs is None for c in result.completions)


def test_429_waits_as_long_as_retry_after_says(server):
    server.faults.extend(["429"])
    server.retry_after = 1
    started = time.monotonic()
    result = ask(backend_for(server))
    assert time.monotonic() - started >= 0.95  # the backoff alone would have been ~0.01 s
    assert len(server.completions()) == 2 and result.completions[0].text.endswith("8")


@pytest.mark.parametrize("fault", ["500", "503", "truncate", "garbage", "timeout"])
def test_transient_failures_are_retried(server, fault):
    server.faults.extend([fault, fault])
    server.hang_seconds = 60  # a hung request outlasts the client's 2 s by far; any other takes milliseconds
    backend = backend_for(server, timeout=2.0)
    result = ask(backend)
    assert result.completions[0].text.endswith("8")
    assert len(server.completions()) == 3 and backend.pool.endpoints[0].failures == 2


def test_other_4xx_fail_at_once(server):
    server.faults.extend(["400"])
    with pytest.raises(RemoteError, match="frobnicate") as info:
        ask(backend_for(server))
    assert info.value.status == 400 and len(server.completions()) == 1


def test_a_context_length_error_says_so(server):
    server.faults.extend(["context"])
    with pytest.raises(ContextLengthExceeded, match="context length"):
        ask(backend_for(server), max_tokens=4000)
    assert len(server.completions()) == 1


def test_a_known_context_length_is_checked_before_calling(server):
    with pytest.raises(ContextLengthExceeded):
        ask(backend_for(server, context_length=3))
    assert server.completions() == []


def test_retries_run_out(server):
    server.faults.extend(["500"] * 3)
    with pytest.raises(ServerUnavailable, match="3 tries.*HTTP 500"):
        ask(backend_for(server, retries=2))


def test_concurrency_is_limited_per_endpoint(server):
    server.gather = 2  # requests are answered two at a time: the limit is reached, however slow the machine,
    server.delay = 0.1  # and held a while: a client over its limit would send more meanwhile
    backend = backend_for(server, max_concurrency=2)

    async def many():
        return await asyncio.gather(
            *(backend.generate(GenerationRequest(messages=QUESTION, seed=i)) for i in range(8))
        )

    assert len(asyncio.run(many())) == 8
    assert server.most_in_flight == 2


def test_load_is_spread_across_endpoints():
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        a.delay = b.delay = 0.05
        backend = backend_for(a, b, max_concurrency=4)

        async def many():
            return await asyncio.gather(
                *(backend.generate(GenerationRequest(messages=QUESTION, seed=i)) for i in range(16))
            )

        asyncio.run(many())
        assert len(a.completions()) + len(b.completions()) == 16
        assert 6 <= len(a.completions()) <= 10  # even within a couple of requests
        assert a.most_in_flight <= 4 and b.most_in_flight <= 4


def test_a_dead_endpoint_sends_its_requests_to_the_living_one(monkeypatch):
    slept: list[float] = []
    sleep = asyncio.sleep

    async def recorded_sleep(seconds, *args, **kwargs):
        slept.append(seconds)
        return await sleep(seconds, *args, **kwargs)

    monkeypatch.setattr(asyncio, "sleep", recorded_sleep)
    with FakeOpenAIServer() as alive:
        dead = FakeOpenAIServer().start()
        dead.kill()
        backend = backend_for(dead, alive, retries=3, backoff=5.0)
        for i in range(4):
            ask(backend, seed=i)
        assert [s for s in slept if s >= 1.0] == []  # no 5 s backoff: the retry went elsewhere at once
        assert len(alive.completions()) == 4
        assert backend.pool.endpoints[0].failures >= 1  # the dead one was tried


def test_api_key_from_the_named_environment_variable(server, monkeypatch):
    server.api_key = "sk-test-123"
    monkeypatch.setenv("FAKE_SERVER_KEY", "sk-test-123")
    result = ask(backend_for(server, api_key_env="FAKE_SERVER_KEY"))
    assert result.completions[0].text
    assert server.requests[0][2]["Authorization"] == "Bearer sk-test-123"

    monkeypatch.setenv("FAKE_SERVER_KEY", "wrong")
    with pytest.raises(RemoteError) as info:
        ask(backend_for(server, api_key_env="FAKE_SERVER_KEY"))
    assert info.value.status == 401  # no retry for a wrong key
    monkeypatch.delenv("FAKE_SERVER_KEY")
    with pytest.raises(BackendUnavailable, match="FAKE_SERVER_KEY"):
        backend_for(server, api_key_env="FAKE_SERVER_KEY")


def test_retry_after_as_seconds_or_http_date():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_after_seconds(later) <= 31


def test_recipe_validation_of_openai_options():
    def recipe(spec: dict) -> Recipe:
        return Recipe.model_validate(
            {"name": "r", "models": {"m": spec}, "nodes": [{"id": "a", "technique": "sample"}]}
        )

    with pytest.raises(RecipeError, match="needs an `openai:` block"):
        recipe({"backend": "openai", "model": "x"})
    with pytest.raises(RecipeError, match="not an http"):
        recipe({"backend": "openai", "model": "x", "openai": {"endpoints": ["localhost:8000"]}})
    with pytest.raises(RecipeError, match="is not a setting of backend 'local'"):
        recipe({"model": "x", "openai": {"endpoints": "http://a/v1"}})
    with pytest.raises(RecipeError, match="unknown key"):
        recipe({"backend": "openai", "model": "x", "openai": {"endpoints": "http://a/v1", "api_key": "sk-oops"}})
    good = recipe({"backend": "openai", "model": "x", "openai": {"endpoints": "http://a:1/v1/", "max_concurrency": 4}})
    spec = good.models["m"]
    assert spec.openai.endpoints == ("http://a:1/v1",)
    other = spec.model_copy(update={"openai": spec.openai.model_copy(update={"endpoints": ("http://b:1/v1",)})})
    assert spec.key() != other.key()  # two servers' samples never share a cache entry


class TemplateTokenizer:
    """Just enough of a HF tokenizer: a chat template and a whitespace tokenizer."""

    chat_template = "plain"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True, continue_final_message=False):
        turns = [f"<{m['role']}>{m['content']}</>" for m in messages]
        if continue_final_message:
            turns[-1] = turns[-1].removesuffix("</>")
        return "".join(turns) + ("<assistant>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def test_an_assistant_turn_is_continued_through_the_completions_endpoint(server):
    conversation = (*QUESTION, Message(role="assistant", content="Let me think: 3 + 4 ="))
    backend = backend_for(server)
    with pytest.raises(ValueError, match="needs either the model's chat template.*continue_final_message"):
        ask(backend, messages=conversation)
    assert server.completions() == []

    backend.tokenizer = TemplateTokenizer()
    result = ask(backend, messages=conversation, max_tokens=3)
    [(path, body, _)] = server.requests
    assert path == "/v1/completions" and "messages" not in body
    assert body["prompt"] == "<user>Compute 3 + 4 =</><assistant>Let me think: 3 + 4 ="  # the turn left open
    assert result.completions[0].text == "Let me add"
    # a plain chat request still goes to the chat endpoint, estimated with the template
    ask(backend)
    assert server.requests[-1][0] == "/v1/chat/completions"
    assert backend.count_prompt_tokens(GenerationRequest(messages=QUESTION)) == 5  # "<user>Compute", "3", ..., "=</><assistant>"


def test_a_server_that_continues_final_messages_gets_them_on_the_chat_endpoint(server):
    conversation = (*QUESTION, Message(role="assistant", content="Let me think: 3 + 4 ="))
    backend = backend_for(server, continue_final_message=True)  # no chat template needed here
    ask(backend, messages=conversation, max_tokens=3)
    [(path, body, _)] = server.requests
    assert path == "/v1/chat/completions"
    assert body["messages"][-1] == {"role": "assistant", "content": "Let me think: 3 + 4 ="}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    ask(backend)  # a plain chat request opens a new turn as before
    assert "continue_final_message" not in server.requests[-1][1]


def test_top_logprobs_maps_from_chat_and_legacy_blocks():
    from orchestra.backends.openai_http import _top_logprob_maps

    chat = {"content": [{"token": "a", "logprob": -0.1, "top_logprobs": [
        {"token": " yes", "logprob": -0.5}, {"token": " Yes", "logprob": -1.5},
        {"token": " yes", "logprob": -1.5}, {"token": "no", "logprob": -3.0}]}]}
    [top] = _top_logprob_maps(chat, 3)
    assert set(top) == {" yes", " Yes"}  # the 4th is beyond k; same-text tokens merged
    assert top[" yes"] == pytest.approx(math.log(math.exp(-0.5) + math.exp(-1.5)))
    legacy = {"tokens": ["x", "y"], "token_logprobs": [-0.2, -0.3],
              "top_logprobs": [{"x": -0.2, "z": -2.0}, {"y": -0.3, "w": -1.0, "v": -5.0}]}
    assert _top_logprob_maps(legacy, 2) == ({"x": -0.2, "z": -2.0}, {"y": -0.3, "w": -1.0})
    assert _top_logprob_maps(None, 2) is None


def test_the_stop_string_a_server_names_is_reported(server):
    backend = backend_for(server)
    request = GenerationRequest(prompt="Step 1", stop=("\n\n", "END"))
    named, _ = backend._completion({"text": " add", "finish_reason": "stop", "stop_reason": "\n\n"}, request)
    assert named.stopped_by == "\n\n"  # vLLM's stop_reason: a step boundary, not the end
    silent, _ = backend._completion({"text": " add", "finish_reason": "stop"}, request)
    assert silent.stopped_by is None  # a server that does not say: read as the end of the answer
    token, _ = backend._completion({"text": " add", "finish_reason": "stop", "stop_reason": 2}, request)
    assert token.stopped_by is None  # a stop token id (EOS), not one of the request's strings


# ----- budgets ---------------------------------------------------------------------------------


def _vote_run(server, tmp_path, budget: dict, problems: int):
    import orchestra
    from fake_backend import write_sums
    from orchestra.backends import base as backends_base

    recipe = Recipe.model_validate({
        "name": "remote-vote",
        "models": {"m": {"backend": "openai", "model": "fake-served",
                         "openai": {"endpoints": [server.url], "backoff": 0.01, "timeout": 5.0}}},
        "budget": {"per_run": budget},
        "nodes": [{"id": "s", "technique": "sample", "params": {"n": 4, "temperature": 0.7, "max_tokens": 8}},
                  {"id": "v", "technique": "majority_vote", "inputs": ["s"]}],
    })
    backends_base._LOADED.clear()
    try:
        return orchestra.run(recipe, write_sums(tmp_path / "sums.jsonl", problems), cache=False)
    finally:
        backends_base._LOADED.clear()


def test_a_token_budget_on_a_server_without_a_tokenizer_is_never_exceeded(server, tmp_path):
    """Four characters a token undercounts this server (one a character) and it ignores n: planned
    on the estimate, six problems would spend ~700 tokens of 400. The calls are refused instead."""
    server.ignores_n = True
    result = _vote_run(server, tmp_path, {"total_tokens": 400}, problems=6)
    assert result.summary.usage.total_tokens <= 400
    assert server.completions() == []  # refused before anything was sent
    assert {r.status for r in result.results} == {"error"}
    assert all("only estimated" in r.error and "tokenizer" in r.error for r in result.results)


def test_prompts_sent_once_per_sample_are_booked_once_per_sample(server, tmp_path):
    server.ignores_n = True
    result = _vote_run(server, tmp_path, {"completion_tokens": 10_000}, problems=2)
    sent = sum(len("\n".join(f"{m['role']}: {m['content']}" for m in body["messages"])) for body in server.completions())
    assert len(server.completions()) == 2 * 4
    assert result.summary.usage.prompt_tokens == sent  # the server's count of every copy it was sent


def test_budgets_plan_a_prompt_per_sample_until_the_server_honours_n(server):
    backend = backend_for(server)
    request = GenerationRequest(messages=QUESTION, n=4, seed=1)
    assert backend.prefills(request) == 4 and backend.prefills(request.model_copy(update={"n": 1})) == 1
    assert backend.prepare(request).estimated  # no tokenizer: four characters a token
    ask(backend, n=4, seed=1)
    assert backend.accepts_n is True and backend.prefills(request) == 1
    backend.tokenizer = TemplateTokenizer()
    assert not backend.prepare(request).estimated


def test_tools_and_response_format_are_passed_on_and_tool_calls_come_back_as_text(server):
    from orchestra.tool_calls import FunctionCall, ToolCall, parse_tool_calls

    tool = {"type": "function", "function": {"name": "count", "parameters": {"type": "object"}}}
    earlier = ToolCall(id="call_9", function=FunctionCall(name="count", arguments='{"words": 1}'))
    history = (*QUESTION, Message(role="assistant", content="", tool_calls=(earlier,)),
               Message(role="tool", content="1", tool_call_id="call_9"))
    result = ask(backend_for(server), messages=history, tools=(tool,), tool_choice="required", seed=1)
    [(_, body, _)] = server.requests
    assert body["tools"] == [tool] and body["tool_choice"] == "required"
    assert body["messages"][1]["tool_calls"] == [earlier.model_dump()] and body["messages"][2]["tool_call_id"] == "call_9"
    (call,) = parse_tool_calls(result.completions[0].text)[1]
    assert call.function.name == "count" and set(call.arguments) == {"words"}

    response_format = {"type": "json_object"}
    ask(backend_for(server), response_format=response_format)
    assert server.requests[-1][1]["response_format"] == response_format and "tools" not in server.requests[-1][1]
