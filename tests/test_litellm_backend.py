"""The `litellm` backend through LiteLLM's OpenAI-compatible route (`openai/NAME` + api_base) against
the misbehaving fake server: what is sent, usage, `n`, retries and refusals by the `openai` backend's
rules, cache keys, and a recipe end to end. The run against a real llama.cpp server is in
tests/test_llama_cpp_server.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_backend import write_sums
from fake_openai_server import QUESTION, FakeOpenAIServer, ask, server  # noqa: F401 - server is a fixture

import orchestra
from orchestra.backends import GenerationRequest, ModelSpec
from orchestra.backends import base as backends_base
from orchestra.backends.endpoint_pool import RemoteError, ServerUnavailable
from orchestra.backends.litellm_providers import LiteLLMBackend
from orchestra.backends.openai_http import ContextLengthExceeded
from orchestra.recipe import Recipe

MODEL = "openai/fake-served"  # LiteLLM's OpenAI route: the server is asked for model "fake-served"


def _settings(server: FakeOpenAIServer, **options) -> dict:
    return {"endpoints": [server.url], "backoff": 0.01, "max_backoff": 2.0, "timeout": 5.0, **options}


def backend_for(server: FakeOpenAIServer, **options) -> LiteLLMBackend:
    return LiteLLMBackend(ModelSpec(backend="litellm", model=MODEL, litellm=_settings(server, **options)))


def test_chat_call_sends_the_openai_body_and_counts_the_servers_usage(server) -> None:
    backend = backend_for(server)
    result = ask(backend, n=3, seed=5, first_index=2, logprobs=True, max_tokens=64, stop=("\n\n",))
    [(path, body, headers)] = server.requests
    assert path == "/v1/chat/completions" and body["model"] == "fake-served"
    assert body["n"] == 3 and body["max_tokens"] == 64 and body["stop"] == ["\n\n"] and body["logprobs"] is True
    assert body["seed"] == GenerationRequest(messages=QUESTION, seed=5, first_index=2).sample_seed(0)
    assert headers["x-stainless-retry-count"] == "0"  # the OpenAI client does not retry behind the pool's back
    assert [c.text.split()[-1] for c in result.completions] == ["8", "7", "9"]
    assert [c.completion_tokens for c in result.completions] == [11, 12, 13]
    assert result.prompt_tokens == len("user: Compute 3 + 4 =")  # the server's count
    assert result.usage.completion_tokens == 36 and result.usage.calls == 1 and result.usage.estimated_calls == 0
    assert backend.info.name == f"litellm:{MODEL}" and backend.accepts_n is True


def test_raw_prompts_go_to_the_completions_endpoint(server) -> None:
    result = ask(backend_for(server), messages=None, prompt="Compute 1 + 1 = ", logprobs=True, max_tokens=5)
    [(path, body, _)] = server.requests
    assert path == "/v1/completions" and body["prompt"] == "Compute 1 + 1 = " and body["logprobs"] == 1
    assert result.completions[0].finish_reason == "length" and result.completions[0].completion_tokens == 5


def test_a_server_that_ignores_n_gets_single_calls_for_the_rest(server) -> None:
    server.ignores_n = True
    backend = backend_for(server)
    result = ask(backend, n=3, seed=1, temperature=0.7)
    assert len(server.completions()) == 3 and len(result.completions) == 3 and backend.accepts_n is False
    assert result.usage.calls == 3


@pytest.mark.parametrize("fault", ["500", "503", "429"])
def test_transient_failures_are_retried_by_the_pool(server, fault: str) -> None:
    server.faults.extend([fault, fault])
    server.retry_after = 0
    backend = backend_for(server)
    assert ask(backend).completions[0].text.endswith("8")
    assert len(server.completions()) == 3 and backend.pool.endpoints[0].failures == 2


def test_retries_run_out(server) -> None:
    server.faults.extend(["500"] * 3)
    with pytest.raises(ServerUnavailable, match="3 tries.*HTTP 500"):
        ask(backend_for(server, retries=2))
    assert len(server.completions()) == 3


def test_other_4xx_fail_at_once_and_context_errors_say_so(server) -> None:
    server.faults.extend(["400"])
    with pytest.raises(RemoteError) as info:
        ask(backend_for(server))
    assert info.value.status == 400 and len(server.completions()) == 1
    server.faults.extend(["context"])
    with pytest.raises(ContextLengthExceeded, match="context length"):
        ask(backend_for(server), max_tokens=4000)
    assert len(server.completions()) == 2


def test_a_dead_server_is_a_refused_connection_retried_then_reported(server) -> None:
    backend = backend_for(server, retries=1)
    server.kill()
    with pytest.raises(ServerUnavailable, match="2 tries.*connection failed"):
        ask(backend)
    assert backend.pool.endpoints[0].down_until > 0  # rested, as the openai backend rests a refusing server


def test_cache_keys_name_the_model_and_its_endpoints(server) -> None:
    spec = ModelSpec(backend="litellm", model=MODEL, litellm=_settings(server))
    elsewhere = ModelSpec(backend="litellm", model=MODEL, litellm=_settings(server, endpoints=["http://127.0.0.1:9/v1"]))
    hosted = ModelSpec(backend="litellm", model="anthropic/claude-sonnet-4-5")
    assert spec.key() == f"litellm:{MODEL}@{server.url}"
    assert len({spec.key(), elsewhere.key(), hosted.key()}) == 3
    openai_spec = ModelSpec(backend="openai", model="fake-served", openai={"endpoints": [server.url]})
    assert openai_spec.key() != spec.key()


def test_a_recipe_runs_end_to_end_and_a_rerun_is_served_from_the_cache(server, tmp_path: Path) -> None:
    recipe = Recipe.model_validate({
        "name": "litellm-vote",
        "models": {"m": {"backend": "litellm", "model": MODEL, "litellm": _settings(server)}},
        "nodes": [
            {"id": "samples", "technique": "sample", "params": {"n": 4, "temperature": 0.7, "max_tokens": 32}},
            {"id": "vote", "technique": "majority_vote", "inputs": ["samples"]},
        ],
        "budget": {"per_problem": {"calls": 1}},
    })
    task, cache = write_sums(tmp_path / "sums.jsonl", 3), tmp_path / "cache.sqlite"
    backends_base._LOADED.clear()
    first = orchestra.run(recipe, task, out=tmp_path / "run1", cache=cache)
    assert first.accuracy == 1.0 and [r.status for r in first.results] == ["ok"] * 3
    assert len(server.completions()) == 3 and all(b["n"] == 4 for b in server.completions())
    usage = first.summary.usage
    assert usage.calls == 3 and usage.estimated_calls == 0 and usage.completion_tokens > 3 * 4 * 8
    summary = json.loads((tmp_path / "run1" / "summary.json").read_text())
    assert summary["usage"]["completion_tokens"] == usage.completion_tokens
    backends_base._LOADED.clear()
    again = orchestra.run(recipe, task, out=tmp_path / "run2", cache=cache)
    assert len(server.completions()) == 3  # every sample came from the cache
    assert [r.answer for r in again.results] == [r.answer for r in first.results]


def test_options_are_validated_with_the_recipe() -> None:
    with pytest.raises(ValueError, match="litellm.timeout"):
        ModelSpec(backend="litellm", model=MODEL, litellm={"timeout": -1})
    assert ModelSpec(backend="litellm", model="gemini/gemini-2.5-flash").options.litellm.drop_params is True
