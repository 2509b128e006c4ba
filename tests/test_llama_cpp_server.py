"""The `openai` backend against real peers serving the default model's GGUF on loopback, started
by the test: llama-cpp-python's OpenAI server, and llama.cpp's native `llama-server` where
`make llama-server` built it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest

import orchestra
from orchestra.backends import base as backends_base
from orchestra.backends import GenerationRequest
from orchestra.models import resolve
from orchestra.problem import Message
from orchestra.backends import ModelSpec
from orchestra.backends import DEFAULT_MODEL
from orchestra.recipe import Recipe
from orchestra.server.background import free_port

pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server] (in the `test` extra)")
pytestmark = pytest.mark.model

TASK = "reasoning_gym:chain_sum?min_terms=2&max_terms=2&max_digits=1"


NATIVE_SERVER = Path(sys.executable).parent / "llama-server"


class Peer(NamedTuple):
    name: str  # "llama-cpp-python" (its Python server) or "llama-server" (llama.cpp's native one)
    url: str


def _peer_command(peer: str, gguf: Path, port: int) -> list[str]:
    if peer == "llama-cpp-python":
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                "--port", str(port), "--n_threads", "1", "--n_threads_batch", "1", "--n_ctx", "2048",
                "--verbose", "False", "--model_alias", DEFAULT_MODEL]
    if not NATIVE_SERVER.exists():
        pytest.skip(f"llama.cpp's native server is not built ({NATIVE_SERVER}): `make llama-server` "
                    "(which `make test` runs first) builds it")
    return [str(NATIVE_SERVER), "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
            "--threads", "1", "--threads-batch", "1", "--ctx-size", "4096", "--parallel", "2", "--no-webui",
            "--alias", DEFAULT_MODEL]


@pytest.fixture(scope="module", params=["llama-cpp-python", "llama-server"])
def llama_server(request, tmp_path_factory):
    """A real llama.cpp peer on a free loopback port, serving the default model's GGUF: llama-cpp-python's
    Python server (`python -m llama_cpp.server`, in the `test` extra), and llama.cpp's native C++
    `llama-server` that `make llama-server` (part of `make test`) builds into .venv/bin.

    One thread: on a 2-core machine that also runs the tests (and maybe other jobs),
    llama.cpp's spinning thread pool at 2 threads measured 10-100x slower than at 1."""
    source = resolve(DEFAULT_MODEL)
    gguf = Path(source.path) / (source.gguf_file or "")
    port = free_port()
    command = _peer_command(request.param, gguf, port)
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"{request.param} exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{request.param} did not start in 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield Peer(request.param, url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(autouse=True)
def fresh_backends():
    backends_base._LOADED.clear()
    yield
    backends_base._LOADED.clear()


def test_a_recipe_runs_end_to_end_against_llama_cpp(llama_server, tmp_path):
    recipe = Recipe.model_validate(
        {
            "name": "remote-vote",
            "models": {"m": {"backend": "openai", "model": DEFAULT_MODEL, "openai": {"endpoints": [llama_server.url]}}},
            "nodes": [
                {"id": "samples", "technique": "sample", "params": {"n": 2, "temperature": 0.7, "max_tokens": 12}},
                {"id": "pick", "technique": "best_of_n", "inputs": ["samples"], "params": {"scorer": "mean_logprob"}},
            ],
        }
    )
    result = orchestra.run(recipe, TASK, limit=2, out=tmp_path / "run", cache=tmp_path / "cache.sqlite")
    assert [r.status for r in result.results] == ["ok", "ok"], [r.error for r in result.results]
    usage = result.summary.usage
    assert usage.estimated_calls == 0  # llama.cpp reports usage
    assert usage.completion_tokens > 0 and usage.prompt_tokens > 20 * 2
    [backend] = backends_base._LOADED.values()
    # llama-cpp-python answers one choice whatever n is (single calls filled in); llama-server answers n
    assert backend.accepts_n is (llama_server.name == "llama-server")
    assert backend.tokenizer is not None  # the default model's own tokenizer estimates before each call
    for r in result.results:
        assert r.usage_by_node["samples"].calls == 1 and r.output_candidates == 1

    again = orchestra.run(recipe, TASK, limit=2, cache=tmp_path / "cache.sqlite")
    assert again.summary.usage.cache_hits == 4 and [r.text for r in again.results] == [r.text for r in result.results]


def test_greedy_through_the_backend_matches_a_direct_call(llama_server):
    spec = ModelSpec(backend="openai", model=DEFAULT_MODEL, openai={"endpoints": [llama_server.url]})
    backend = backends_base.get_backend(spec)
    question = (Message(role="user", content="What is 4 + 5?"),)
    request = GenerationRequest(messages=question, max_tokens=10, temperature=0.0, logprobs=True)
    result = asyncio.run(backend.generate(request))
    direct = httpx.post(
        llama_server.url + "/chat/completions",
        json={"model": DEFAULT_MODEL, "messages": [m.model_dump() for m in question], "max_tokens": 10, "temperature": 0.0},
        timeout=120,
    ).json()
    [completion] = result.completions
    assert completion.text == direct["choices"][0]["message"]["content"]
    assert result.prompt_tokens == direct["usage"]["prompt_tokens"]
    assert completion.completion_tokens == direct["usage"]["completion_tokens"]
    assert completion.logprobs is not None and len(completion.logprobs) == completion.completion_tokens
    # the pre-call estimate with the local tokenizer is close to what the server counted
    assert abs(backend.count_prompt_tokens(request) - result.prompt_tokens) <= 3


def test_an_assistant_turn_is_continued_on_llama_cpp(llama_server):
    spec = ModelSpec(backend="openai", model=DEFAULT_MODEL, openai={"endpoints": [llama_server.url]})
    backend = backends_base.get_backend(spec)
    conversation = (Message(role="user", content="What is 4 + 5?"), Message(role="assistant", content="4 + 5 ="))
    request = GenerationRequest(messages=conversation, max_tokens=4, temperature=0.0)
    result = asyncio.run(backend.generate(request))
    rendered = backend.tokenizer.apply_chat_template(
        [m.model_dump() for m in conversation], tokenize=False, add_generation_prompt=False, continue_final_message=True
    )
    assert rendered.endswith("4 + 5 =")  # the assistant's turn is left open
    direct = httpx.post(llama_server.url + "/completions", json={"model": DEFAULT_MODEL, "prompt": rendered,
                                                            "max_tokens": 4, "temperature": 0.0}, timeout=120).json()
    assert result.completions[0].text == direct["choices"][0]["text"]


def test_the_litellm_backend_runs_a_recipe_against_llama_cpp(llama_server, tmp_path):
    """LiteLLM's OpenAI route (`openai/NAME` + api_base) to the same peer: a recipe end to end, with
    the server's usage, and greedy text equal to a direct call's."""
    model = {"backend": "litellm", "model": f"openai/{DEFAULT_MODEL}",
             "litellm": {"endpoints": [llama_server.url], "tokenizer": DEFAULT_MODEL}}
    recipe = Recipe.model_validate(
        {
            "name": "litellm-vote",
            "models": {"m": model},
            "nodes": [
                {"id": "samples", "technique": "sample", "params": {"n": 2, "temperature": 0.7, "max_tokens": 12}},
                {"id": "vote", "technique": "majority_vote", "inputs": ["samples"]},
            ],
        }
    )
    result = orchestra.run(recipe, TASK, limit=2, out=tmp_path / "run", cache=False)
    assert [r.status for r in result.results] == ["ok", "ok"], [r.error for r in result.results]
    usage = result.summary.usage
    assert usage.estimated_calls == 0 and usage.completion_tokens > 0 and usage.prompt_tokens > 20 * 2
    [backend] = backends_base._LOADED.values()
    assert backend.name == "litellm" and backend.accepts_n is (llama_server.name == "llama-server")

    question = (Message(role="user", content="What is 4 + 5?"),)
    greedy = asyncio.run(backend.generate(GenerationRequest(messages=question, max_tokens=10, temperature=0.0)))
    direct = httpx.post(
        llama_server.url + "/chat/completions",
        json={"model": DEFAULT_MODEL, "messages": [m.model_dump() for m in question], "max_tokens": 10, "temperature": 0.0},
        timeout=120,
    ).json()
    assert greedy.completions[0].text == direct["choices"][0]["message"]["content"]
    assert greedy.prompt_tokens == direct["usage"]["prompt_tokens"]
