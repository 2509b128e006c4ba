"""The `allocate` technique with the scripted backend: the probe's signal picks a tier, easy
problems stop at the probe, the pool continues a `sample` node's, and the calibration helper
meets a target mean. No model; fast."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_backend import fake_backend, write_sums  # noqa: F401  (fixture)

import fake_backend as scripted
import orchestra
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.recipe import Recipe
from orchestra.scorer import scorer
from orchestra.search.space import load_space
from orchestra.technique import get_technique
from orchestra.techniques.allocate import AllocateParams, Tier, calibrate_tiers, expected_samples
from test_engine import traces

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"temperature": 0.7, "max_tokens": 64}


def one_node(technique: str, params: dict) -> Recipe:
    return Recipe.model_validate({
        "name": "alloc", "models": {"m": {"backend": "fake"}},
        "nodes": [{"id": "gen", "technique": technique, "params": {**SETTINGS, **params}}],
    })


def calls_for(fake_backend, words: str) -> list[tuple[int, int]]:
    return [(c.first_index, c.n) for c in fake_backend.log.calls if words in c.prompt]


def test_easy_problem_stops_at_the_probe_and_a_hard_one_gets_the_top_tier(tmp_path: Path, fake_backend) -> None:
    # p0 ("Compute 2 + 1 =") is unanimous; p1 ("Compute 3 + 3 =") gives a new answer every sample
    fake_backend.script = lambda request, prompt, index: "Answer: 3" if "2 + 1" in prompt else f"Answer: {index}"
    out = tmp_path / "run"
    result = orchestra.run(one_node("allocate", {}), write_sums(tmp_path / "s.jsonl", 2), out=out, cache=False)
    found = traces(out)
    easy, hard = found[("p0", "gen")]["outputs"][0], found[("p1", "gen")]["outputs"][0]
    assert (easy["scores"]["signal"], easy["scores"]["tier"], easy["scores"]["samples"]) == (1.0, 0, 4)
    assert (hard["scores"]["signal"], hard["scores"]["tier"], hard["scores"]["samples"]) == (0.25, 2, 16)
    assert calls_for(fake_backend, "2 + 1") == [(0, 4)]
    assert calls_for(fake_backend, "3 + 3") == [(0, 4), (4, 12)]  # indices continue after the probe
    assert result.results[0].answer == "3" and result.results[0].correct
    # a vote's output: one candidate per answer, every sample of p1 its own answer
    assert len(found[("p1", "gen")]["outputs"]) == 16
    assert expected_samples([1.0, 0.25], AllocateParams().tiers) == 10


def test_pool_is_a_sample_nodes_pool_and_the_cache_serves_either(tmp_path: Path, fake_backend) -> None:
    # default offsets: the probe's answers are c+1, c, c+2, c, so the leader holds half: the middle tier
    spec = write_sums(tmp_path / "s.jsonl", 1)
    cache = tmp_path / "cache.db"
    allocated = tmp_path / "allocated"
    orchestra.run(one_node("allocate", {"select": "pool"}), spec, out=allocated, cache=cache)
    pool = traces(allocated)[("p0", "gen")]["outputs"]
    assert len(pool) == 8 and {c["scores"]["tier"] for c in pool} == {1}
    assert calls_for(fake_backend, "2 + 1") == [(0, 4), (4, 4)]

    fake_backend.log.calls.clear()
    sampled = tmp_path / "sampled"
    orchestra.run(one_node("sample", {"n": 8}), spec, out=sampled, cache=cache)
    assert fake_backend.log.calls == []  # all eight replayed from allocate's pool
    assert [c["text"] for c in traces(sampled)[("p0", "gen")]["outputs"]] == [c["text"] for c in pool]
    assert [c["text"] for c in pool][4].endswith("sample=4) hmm Answer: 3")


@scorer("test_verifier")
async def _verifier(ctx: Context, candidate: Candidate) -> float:
    """A verifier that knows the answer: 0.9 for a right one, 0.2 for a wrong one."""
    return 0.9 if candidate.answer == str(ctx.problem.answer) else 0.2


SCORER_PARAMS = {
    "signal": "scorer",
    "scorer": "test_verifier",
    "tiers": [{"at_least": 0.8, "samples": 4, "select": "best_of"}, {"samples": 8}],
    "select": "weighted",
}


def test_scorer_signal_stops_when_the_verifier_likes_a_probe_sample(tmp_path: Path, fake_backend) -> None:
    out = tmp_path / "run"
    result = orchestra.run(one_node("allocate", SCORER_PARAMS), write_sums(tmp_path / "s.jsonl", 1), out=out, cache=False)
    outputs = traces(out)[("p0", "gen")]["outputs"]
    assert len(outputs) == 1  # best_of: the one best sample, the first of the tied right ones
    assert outputs[0]["scores"] == pytest.approx({"test_verifier": 0.9, "signal": 0.9, "tier": 0, "samples": 4})
    assert outputs[0]["text"].endswith("sample=1) hmm Answer: 3")
    assert result.results[0].correct


def test_scorer_signal_escalates_when_no_probe_sample_is_liked(tmp_path: Path, fake_backend, monkeypatch) -> None:
    monkeypatch.setattr(scripted, "OFFSETS", (1, 2, 3, 1, 0, 0, 0, 0))  # the probe holds no right answer
    out = tmp_path / "run"
    result = orchestra.run(one_node("allocate", SCORER_PARAMS), write_sums(tmp_path / "s.jsonl", 1), out=out, cache=False)
    winner = traces(out)[("p0", "gen")]["outputs"][0]
    assert (winner["scores"]["signal"], winner["scores"]["tier"], winner["scores"]["samples"]) == (0.2, 1, 8)
    # weighted vote: the right answer's four samples weigh 4 x 0.9 against four wrong ones at 0.2
    assert winner["scores"]["votes"] == pytest.approx(3.6 / 4.4)
    assert result.results[0].correct


def test_a_named_scorer_counts_as_the_nodes_need() -> None:
    params = AllocateParams(signal="scorer", scorer="mean_logprob")
    assert "logprobs" in get_technique("allocate").needs_for(params)
    assert not get_technique("allocate").scales_samples  # its sample count depends on the probe


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"tiers": [{"at_least": 0.5, "samples": 4}]}, "leave out its at_least"),
        ({"tiers": [{"samples": 4}, {"samples": 8}]}, "needs at_least"),
        ({"tiers": [{"at_least": 0.5, "samples": 4}, {"at_least": 0.75, "samples": 8}, {"samples": 16}]}, "fall strictly"),
        ({"probe": 8, "tiers": [{"at_least": 0.5, "samples": 4}, {"samples": 16}]}, "at least the probe's 8"),
        ({"signal": "scorer"}, "need a `scorer`"),
        ({"tiers": [{"samples": 8, "select": "best_of"}]}, "need a `scorer`"),
        ({"scorer": "no_such_scorer"}, "no_such_scorer"),
    ],
)
def test_params_refuse_tiers_that_do_not_say_what_to_do(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AllocateParams.model_validate(params)


def test_calibrated_tiers_spend_the_most_within_a_target_mean() -> None:
    signals = [1.0, 1.0, 1.0, 0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0.0]
    tiers = calibrate_tiers(signals, probe=4, samples=16, mean_samples=8)
    assert tiers == [Tier(at_least=0.5, samples=4), Tier(samples=16)]
    assert expected_samples(signals, tiers) == pytest.approx(7.6)  # three hard problems get 16
    # the next threshold up would spend more than the target
    assert expected_samples(signals, [Tier(at_least=0.75, samples=4), Tier(samples=16)]) == pytest.approx(10)
    AllocateParams(probe=4, tiers=tiers)  # usable as they are
    assert calibrate_tiers(signals, probe=4, samples=16, mean_samples=16) == [Tier(samples=16)]
    assert calibrate_tiers(signals, probe=4, samples=16, mean_samples=4) == [Tier(at_least=0.0, samples=4), Tier(samples=16)]
    with pytest.raises(ValueError, match="below the probe"):
        calibrate_tiers(signals, probe=4, samples=16, mean_samples=3)
    with pytest.raises(ValueError, match="no probe signals"):
        calibrate_tiers([], probe=4, samples=16, mean_samples=8)


def test_search_space_offers_allocate_as_the_generation_layer(fake_backend) -> None:
    space = load_space(ROOT / "recipes" / "spaces" / "vote_judge_verify.yaml")
    structures = set(space.structures())
    assert ("allocate", "vote") in structures and ("allocate", "verify", "verified_vote") in structures
    assert not any("allocate" in s[1:] for s in structures)  # a generator: first or nowhere
