"""Voting techniques with the scripted backend: adaptive vote's stopping rules, weighted
best-of-n, and the Beta stopping statistic. No model; fast."""

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
from orchestra.techniques.adaptive_vote import leader_beats_runner_up
from test_engine import traces


@pytest.mark.parametrize(("leader", "runner_up"), [(0, 0), (3, 0), (2, 1), (5, 3), (9, 2)])
def test_beta_statistic_matches_numeric_integration(leader: int, runner_up: int) -> None:
    a, b, steps = leader + 1, runner_up + 1, 200_000
    grid = [(i + 0.5) / steps for i in range(steps)]
    density = [x ** (a - 1) * (1 - x) ** (b - 1) for x in grid]
    expected = sum(d for x, d in zip(grid, density) if x > 0.5) / sum(density)
    assert leader_beats_runner_up(leader, runner_up) == pytest.approx(expected, abs=1e-6)


def adaptive(**params) -> Recipe:
    return Recipe.model_validate({
        "name": "adaptive", "models": {"m": {"backend": "fake"}},
        "nodes": [{"id": "vote", "technique": "adaptive_vote", "params": params}],
    })


def run_adaptive(tmp_path: Path, **params) -> dict:
    out = tmp_path / "run"
    orchestra.run(adaptive(**params), write_sums(tmp_path / "s.jsonl", 1), out=out, cache=False)
    return traces(out)[("p0", "vote")]["outputs"][0]


def test_adaptive_vote_stops_early_when_samples_agree(tmp_path: Path, fake_backend, monkeypatch) -> None:
    monkeypatch.setattr(scripted, "OFFSETS", (0,) * 8)  # every sample right: unanimous
    winner = run_adaptive(tmp_path, batch=2, max_samples=16)
    # 2-0 gives P=7/8 < 0.95; 4-0 gives 31/32
    assert winner["scores"]["samples"] == 4
    assert winner["scores"]["confidence"] == pytest.approx(31 / 32)
    assert [(c.first_index, c.n) for c in fake_backend.log.calls] == [(0, 2), (2, 2)]


def test_adaptive_vote_spends_max_samples_on_a_split_pool(tmp_path: Path, fake_backend) -> None:
    # default offsets: half the samples right, the rest spread over three wrong answers
    winner = run_adaptive(tmp_path, batch=4, max_samples=12)
    assert winner["scores"]["samples"] == 12
    assert winner["scores"]["confidence"] < 0.95
    assert winner["answer"] == "3"  # p0 is "Compute 2 + 1 ="


def test_adaptive_vote_agreement_rule(tmp_path: Path, fake_backend) -> None:
    # offsets 1, 0, 2, 0: after 4 samples the leader holds 2/4 of the votes
    winner = run_adaptive(tmp_path, method="agreement", agreement=0.5, min_samples=4, batch=2)
    assert winner["scores"]["samples"] == 4 and winner["answer"] == "3"


def test_adaptive_vote_rejects_min_above_max(fake_backend) -> None:
    with pytest.raises(Exception, match="min_samples"):
        adaptive(min_samples=8, max_samples=4)


@scorer("test_likes_plus_two")
async def likes_plus_two(ctx: Context, candidate: Candidate) -> float:
    """Scores the (wrong) answer c+2 five times higher than anything else."""
    return 5.0 if candidate.answer == str(int(ctx.problem.answer) + 2) else 1.0


def test_weighted_best_of_n_sums_scores_per_answer(tmp_path: Path, fake_backend) -> None:
    def recipe(select: dict) -> Recipe:
        return Recipe.model_validate({
            "name": "w", "models": {"m": {"backend": "fake"}},
            "nodes": [
                {"id": "samples", "technique": "sample", "params": {"n": 4}},
                {"id": "pick", "inputs": ["samples"], **select},
            ],
        })

    spec = write_sums(tmp_path / "s.jsonl", 1)
    # answers c+1, c, c+2, c: weights 1, 1, 5, 1 -> c+2 (5) beats c (2)
    weighted = orchestra.run(recipe({"technique": "weighted_best_of_n", "params": {"scorer": "test_likes_plus_two"}}), spec, out=tmp_path / "w", cache=False)
    assert weighted.results[0].answer == "5"
    votes = [c["scores"]["votes"] for c in traces(tmp_path / "w")[("p0", "pick")]["outputs"]]
    assert votes == pytest.approx([5 / 8, 2 / 8, 1 / 8])
    plain = orchestra.run(recipe({"technique": "majority_vote"}), spec, cache=False)
    assert plain.results[0].answer == "3"


def test_weighted_vote_refuses_log_probabilities(tmp_path: Path, fake_backend) -> None:
    rec = Recipe.model_validate({
        "name": "w", "models": {"m": {"backend": "fake"}},
        "nodes": [
            {"id": "samples", "technique": "sample", "params": {"n": 4}},
            {"id": "pick", "technique": "weighted_best_of_n", "inputs": ["samples"], "params": {"scorer": "mean_logprob"}},
        ],
    })
    result = orchestra.run(rec, write_sums(tmp_path / "s.jsonl", 1), cache=False)
    assert result.results[0].status == "error"
    assert "non-negative" in result.results[0].error
