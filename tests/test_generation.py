"""Generation techniques with the scripted backend: ensemble across models, repeated sampling
until a verifier accepts. No model; fast."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_backend import OFFSETS, fake_backend, write_sums  # noqa: F401  (fixture)

import orchestra
from orchestra.errors import RecipeError
from orchestra.recipe import Recipe
from test_engine import traces


def two_model_recipe(node: dict, **models) -> Recipe:
    return Recipe.model_validate({
        "name": "gen",
        "models": models or {"a": {"backend": "fake", "model": "fake-a"}, "b": {"backend": "fake", "model": "fake-b"}},
        "nodes": [node],
    })


def test_ensemble_samples_every_model(tmp_path: Path, fake_backend) -> None:
    rec = two_model_recipe({"id": "gen", "technique": "ensemble", "params": {"n": 3}})
    out = tmp_path / "run"
    orchestra.run(rec, write_sums(tmp_path / "s.jsonl", 1), out=out, cache=False)
    outputs = traces(out)[("p0", "gen")]["outputs"]
    assert [c["model"] for c in outputs] == ["a"] * 3 + ["b"] * 3
    assert sorted(call.model for call in fake_backend.log.calls) == ["fake-a", "fake-b"]
    assert all(call.n == 3 for call in fake_backend.log.calls)


def test_ensemble_can_name_a_subset_of_models(tmp_path: Path, fake_backend) -> None:
    rec = two_model_recipe({"id": "gen", "technique": "ensemble", "params": {"n": 2, "models": ["b"]}})
    orchestra.run(rec, write_sums(tmp_path / "s.jsonl", 1), cache=False)
    assert [call.model for call in fake_backend.log.calls] == ["fake-b"]


def test_ensemble_with_an_undefined_model_fails_validation(fake_backend) -> None:
    with pytest.raises(RecipeError, match="model alias 'c' is not defined"):
        two_model_recipe({"id": "gen", "technique": "ensemble", "params": {"models": ["a", "c"]}})


def repeated(n: int, batch: int, threshold: float = 0.5) -> Recipe:
    return Recipe.model_validate({
        "name": "rs",
        "models": {"m": {"backend": "fake"}},
        "nodes": [{
            "id": "rs", "technique": "repeated_sampling",
            "params": {"n": n, "batch": batch, "verifier": "task", "threshold": threshold},
        }],
    })


def test_repeated_sampling_stops_at_the_first_accepted_sample(tmp_path: Path, fake_backend) -> None:
    assert OFFSETS[0] != 0 and OFFSETS[1] == 0  # sample 0 is wrong, sample 1 right
    out = tmp_path / "run"
    result = orchestra.run(repeated(16, batch=1), write_sums(tmp_path / "s.jsonl", 2), out=out, cache=False)
    assert result.accuracy == 1.0
    calls = [(c.first_index, c.n) for c in fake_backend.log.calls]
    assert sorted(calls) == [(0, 1), (0, 1), (1, 1), (1, 1)]  # two rounds of one sample, per problem
    outputs = traces(out)[("p0", "rs")]["outputs"]
    assert [c["scores"]["task"] for c in outputs] == [1.0, 0.0]  # the accepted one first


def test_repeated_sampling_draws_whole_rounds(tmp_path: Path, fake_backend) -> None:
    orchestra.run(repeated(16, batch=4), write_sums(tmp_path / "s.jsonl", 1), cache=False)
    assert [(c.first_index, c.n) for c in fake_backend.log.calls] == [(0, 4)]


def test_repeated_sampling_without_acceptance_spends_n_and_sorts(tmp_path: Path, fake_backend) -> None:
    out = tmp_path / "run"
    orchestra.run(repeated(6, batch=4, threshold=2.0), write_sums(tmp_path / "s.jsonl", 1), out=out, cache=False)
    assert [(c.first_index, c.n) for c in fake_backend.log.calls] == [(0, 4), (4, 2)]
    scores = [c["scores"]["task"] for c in traces(out)[("p0", "rs")]["outputs"]]
    assert len(scores) == 6 and scores == sorted(scores, reverse=True) and scores[0] == 1.0


def test_repeated_sampling_pool_is_the_sample_node_pool(tmp_path: Path, fake_backend) -> None:
    """Rounds continue sample indices: a cached `sample` pool serves repeated sampling."""
    spec = write_sums(tmp_path / "s.jsonl", 1)
    pool = Recipe.model_validate({
        "name": "rs", "models": {"m": {"backend": "fake"}},
        "nodes": [{"id": "rs", "technique": "sample", "params": {"n": 8, "temperature": 0.7}}],
    })
    orchestra.run(pool, spec, cache=tmp_path / "cache.sqlite")
    calls = len(fake_backend.log.calls)
    result = orchestra.run(repeated(8, batch=1, threshold=2.0), spec, cache=tmp_path / "cache.sqlite")
    assert len(fake_backend.log.calls) == calls  # all 8 rounds replayed
    assert result.summary.usage.cache_hits == 8


def test_repeated_sampling_needs_a_known_verifier(fake_backend) -> None:
    with pytest.raises(RecipeError, match="unknown scorer"):
        Recipe.model_validate({
            "name": "rs", "models": {"m": {"backend": "fake"}},
            "nodes": [{"id": "rs", "technique": "repeated_sampling", "params": {"verifier": "tsak"}}],
        })
