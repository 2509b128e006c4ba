"""DeepConf on the real default model (float32, fixed seeds): the local engine ends a sample
mid-decode when its window confidence falls, the stopped sample is a token prefix of the same
sample unstopped (so the tokens it saves are honest), and the technique runs end to end."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

import orchestra
from orchestra.backends import ConfidenceStop, GenerationRequest, ModelSpec, get_backend
from orchestra.problem import Message
from orchestra.recipe import Recipe
from orchestra.techniques.deepconf import group_confidences, stops_early, token_confidences
from test_engine import traces

pytestmark = pytest.mark.model

TASK = "reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1&operators=%2B"
SMALL = {"model": "smollm2-135m-instruct", "dtype": "float32"}
QUESTIONS = ["What is 3 + 4? End with 'Answer: <number>'.", "What is 8 + 5? End with 'Answer: <number>'."]
WINDOW = 4


@pytest.fixture(scope="module")
def backend():
    return get_backend(ModelSpec(**SMALL))


def generate(backend, question: str, stop: ConfidenceStop | None = None):
    request = GenerationRequest(
        messages=(Message(role="user", content=question),), n=3, seed=7, temperature=0.8, max_tokens=40,
        top_logprobs=5, confidence_stop=stop,
    )
    return asyncio.run(backend.generate(request)).completions


@pytest.mark.parametrize("question", QUESTIONS)
def test_the_engine_stops_a_sample_early_and_keeps_its_prefix(backend, question: str) -> None:
    whole = generate(backend, question)
    never = generate(backend, question, ConfidenceStop(threshold=-math.inf, window=WINDOW))
    assert [c.token_ids for c in never] == [c.token_ids for c in whole]
    assert all(c.finish_reason != "confidence" for c in never)

    always = generate(backend, question, ConfidenceStop(threshold=math.inf, window=WINDOW))
    for stopped, full in zip(always, whole):
        assert stopped.finish_reason == "confidence" and len(stopped.token_ids) == WINDOW
        assert stopped.token_ids == full.token_ids[:WINDOW] and stopped.completion_tokens == WINDOW

    # a threshold among the samples' own lowest windows: the shakier ones stop, the others run on
    confidences = [token_confidences(c.top_logprobs) for c in whole]
    lowest = sorted(min(group_confidences(c, WINDOW)) for c in confidences)
    threshold = (lowest[0] + lowest[-1]) / 2
    some = generate(backend, question, ConfidenceStop(threshold=threshold, window=WINDOW))
    for stopped, full, own in zip(some, whole, confidences):
        assert full.token_ids[: len(stopped.token_ids)] == stopped.token_ids
        assert (stopped.finish_reason == "confidence") == stops_early(own, WINDOW, threshold)
        if stopped.finish_reason != "confidence":
            assert stopped.token_ids == full.token_ids
    assert any(c.finish_reason == "confidence" for c in some) and any(c.finish_reason != "confidence" for c in some)


def test_deepconf_online_end_to_end(tmp_path: Path) -> None:
    recipe = Recipe.model_validate({
        "name": "deepconf", "models": {"small": SMALL},
        "nodes": [{"id": "vote", "technique": "deepconf", "params": {
            "mode": "online", "n": 6, "warmup": 2, "batch": 2, "keep": 0.5, "window": WINDOW,
            "temperature": 0.7, "max_tokens": 48,
        }}],
    })
    out = tmp_path / "run"
    result = orchestra.run(recipe, TASK, limit=2, out=out, cache=False)
    found = traces(out)
    stopped = 0
    for r in result.results:
        assert r.status == "ok", r.error
        scores = found[(r.problem_id, "vote")]["outputs"][0]["scores"]
        assert 2 <= scores["traces"] <= 6 and scores["kept"] + scores["stopped"] <= scores["traces"]
        assert r.usage.completion_tokens <= scores["traces"] * 48
        stopped += scores["stopped"]
    assert stopped > 0
