"""`orchestra serve` as a user runs it — the CLI in its own process, the real default model —
driven by the official `openai` client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from orchestra.server.background import free_port

pytestmark = pytest.mark.model

RECIPE = """\
name: tiny-vote
models:
  small: {model: smollm2-135m-instruct, dtype: float32}
nodes:
  - {id: samples, technique: sample, params: {n: 2, temperature: 0.7, max_tokens: 16}}
  - {id: vote, technique: majority_vote, inputs: [samples]}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    recipe = folder / "tiny-vote.yaml"
    recipe.write_text(RECIPE)
    port = free_port()
    env = {**os.environ, "TINY_KEY": "sk-local-1"}
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestra.cli", "serve", str(recipe), "--port", str(port),
         "--api-key-env", "TINY_KEY", "--max-n", "2", "--cache", str(folder / "cache.sqlite")],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"orchestra serve exited with {process.returncode}: {Path(log.name).read_text()[-2000:]}")
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("orchestra serve did not start in 180 s")
            time.sleep(0.3)
        yield base + "/v1", Path(log.name)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_real_model_chat_stream_and_concurrency(served):
    url, log = served
    client = openai.OpenAI(base_url=url, api_key="sk-local-1", max_retries=0)
    question = [{"role": "user", "content": "What is 3 + 4? Answer with a number."}]
    reply = client.chat.completions.create(model="tiny-vote", messages=question, seed=1)
    [choice] = reply.choices
    # seed 1: the chosen sample runs into the recipe's 16-token limit mid-sentence, and says so
    assert choice.message.content.strip() and choice.finish_reason == "length"
    # two samples of at most 16 tokens, one shared prompt (counted once per call)
    assert 2 <= reply.usage.completion_tokens <= 2 * 16 and reply.usage.prompt_tokens > 10
    assert reply.model_extra["orchestra"]["usage"]["cache_hits"] == 0

    # The same seeded request again, streamed: replayed from the server's cache, same answer, same usage.
    stream = client.chat.completions.create(
        model="tiny-vote", messages=question, seed=1, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == choice.message.content
    assert chunks[-1].usage.total_tokens == reply.usage.total_tokens

    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(
            lambda i: client.chat.completions.create(
                model="tiny-vote", messages=[{"role": "user", "content": f"What is {i} + 2?"}]), range(3)))
    # every request ran its own recipe (a 135M model may still answer with an empty string)
    assert all(r.model_extra["orchestra"]["statuses"] == ["ok"] and r.usage.completion_tokens > 0 for r in replies)
    assert len({r.id for r in replies}) == 3

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="nope", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError, match="n=3 exceeds"):
        client.chat.completions.create(model="tiny-vote", messages=question, n=3)
    assert "sk-local-1" not in log.read_text()


def test_real_model_cut_replies_long_prompts_and_a_taken_port(served):
    url, log = served
    client = openai.OpenAI(base_url=url, api_key="sk-local-1", max_retries=0)
    question = [{"role": "user", "content": "What is 3 + 4? Answer with a number."}]
    cut = client.chat.completions.create(model="tiny-vote", messages=question, seed=1, max_tokens=3)
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens <= 3

    too_long = [{"role": "user", "content": "hello " * 20_000}]  # SmolLM2's context is 8192 tokens
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="tiny-vote", messages=too_long, stream=stream)
        assert info.value.body["code"] == "context_length_exceeded" and info.value.body["param"] == "messages"

    port = url.removesuffix("/v1").rsplit(":", 1)[1]
    second = subprocess.run(
        [sys.executable, "-m", "orchestra.cli", "serve", str(log.parent / "tiny-vote.yaml"), "--port", port],
        capture_output=True, text=True, timeout=300, check=False,
    )
    said = second.stdout + second.stderr
    assert second.returncode == 2 and f"127.0.0.1:{port} is already in use" in said and "serving" not in said, said
