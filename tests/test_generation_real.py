"""Generation and voting techniques end to end on the real default model, small limits."""

from __future__ import annotations

from pathlib import Path

import pytest

import orchestra
from orchestra.recipe import Recipe
from test_engine import traces

pytestmark = pytest.mark.model

TASK = "reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&min_digits=1&max_digits=1&operators=%2B"
SMALL = {"model": "smollm2-135m-instruct", "dtype": "float32"}


def run(tmp_path: Path, recipe: dict, limit: int = 2):
    out = tmp_path / recipe["name"]
    result = orchestra.run(Recipe.model_validate(recipe), TASK, limit=limit, out=out, cache=False)
    assert all(r.status == "ok" for r in result.results), [r.error for r in result.results]
    return result, traces(out)


def test_ensemble_of_two_precisions(tmp_path: Path) -> None:
    result, found = run(tmp_path, {
        "name": "ensemble",
        "models": {"fp32": SMALL, "bf16": {**SMALL, "dtype": "bfloat16"}},
        "nodes": [
            {"id": "gen", "technique": "ensemble", "params": {"n": 2, "temperature": 0.7, "max_tokens": 48}},
            {"id": "vote", "technique": "majority_vote", "inputs": ["gen"]},
        ],
    })
    models = [c["model"] for c in found[(result.results[0].problem_id, "gen")]["outputs"]]
    assert models == ["fp32", "fp32", "bf16", "bf16"]
    assert set(result.summary.usage_by_model) == {"fp32", "bf16"}


def test_repeated_sampling_and_adaptive_vote(tmp_path: Path) -> None:
    result, found = run(tmp_path, {
        "name": "repeated",
        "models": {"small": SMALL},
        "nodes": [{
            "id": "rs", "technique": "repeated_sampling",
            "params": {"n": 4, "batch": 2, "verifier": "task", "temperature": 0.7, "max_tokens": 48},
        }],
    })
    for r in result.results:
        drawn = found[(r.problem_id, "rs")]["outputs"]
        assert len(drawn) in (2, 4)
        if len(drawn) == 2:  # stopped after one round: it held a correct sample, put first
            assert drawn[0]["scores"]["task"] == 1.0
        assert r.score == max(c["scores"]["task"] for c in drawn)

    result, found = run(tmp_path, {
        "name": "adaptive",
        "models": {"small": SMALL},
        "nodes": [{"id": "vote", "technique": "adaptive_vote",
                   "params": {"batch": 2, "max_samples": 6, "temperature": 0.7, "max_tokens": 48}}],
    })
    for r in result.results:
        winner = found[(r.problem_id, "vote")]["outputs"][0]
        assert winner["scores"]["samples"] in (2, 4, 6)
        assert r.usage.calls == winner["scores"]["samples"] / 2
