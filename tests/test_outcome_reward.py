"""The outcome verifier: its features, its file, training on labelled pools, the `orm` scorer."""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from orchestra.candidate import Candidate
from orchestra.reward.outcome_features import FEATURES, pool_features
from orchestra.reward.outcome_reward import OutcomeReward, read_metadata
from orchestra.reward.outcome_training import LabelledPool, PoolSettings, cross_check, fit_outcome_reward
from orchestra.scorer import ScorerName, apply_scorer, get_scorer


def cand(answer: str | None, logprob: float = -0.5, tokens: int = 10, finish: str = "stop") -> Candidate:
    return Candidate(
        text=f"... Answer: {answer}", answer=answer, logprobs=(logprob,) * tokens, completion_tokens=tokens, finish_reason=finish
    )


def column(rows: list[list[float]], name: str) -> list[float]:
    return [row[FEATURES.index(name)] for row in rows]


def test_pool_features_read_each_answer_against_its_pool() -> None:
    pool = [cand("7"), cand("7"), cand("7", logprob=-2.0), cand("5"), cand(None, tokens=128, finish="length")]
    rows = pool_features(pool)
    assert len(rows) == 5 and all(len(row) == len(FEATURES) for row in rows)
    assert column(rows, "vote_share") == [0.6, 0.6, 0.6, 0.2, 0.0]
    assert column(rows, "leads_vote") == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert column(rows, "has_answer") == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert column(rows, "ended") == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert column(rows, "distinct_answers") == [0.4] * 5
    assert column(rows, "mean_logprob")[2] == pytest.approx(-2.0)
    assert column(rows, "log_tokens")[4] == pytest.approx(math.log1p(128))
    weighted = column(rows, "weighted_vote_share")
    # Each sample weighs its mean token probability; the unsure 7 counts for less than a sure one.
    total = 4 * math.exp(-0.5) + math.exp(-2.0)
    assert weighted[0] == pytest.approx((2 * math.exp(-0.5) + math.exp(-2.0)) / total)
    assert weighted[3] == pytest.approx(math.exp(-0.5) / total) and weighted[4] == 0.0
    assert pool_features([]) == []


def synthetic_pools(problems: int, seed: int = 0) -> list[LabelledPool]:
    """Pools where right answers recur and are confident, wrong ones scatter: a learnable signal with noise."""
    rng = random.Random(seed)
    pools = []
    for p in range(problems):
        right = str(p)
        candidates, labels = [], []
        for _ in range(8):
            if rng.random() < 0.4:
                candidates.append(cand(right, logprob=rng.uniform(-0.8, -0.1), tokens=rng.randint(5, 30)))
                labels.append(1.0)
            else:
                wrong = rng.choice([None, str(p + 1), str(rng.randint(100, 999))])
                candidates.append(cand(wrong, logprob=rng.uniform(-1.5, -0.4), tokens=rng.randint(5, 128)))
                labels.append(0.0)
        pools.append(LabelledPool(f"p{p}", tuple(candidates), tuple(labels)))
    return pools


def test_cross_check_holds_out_problems_and_beats_chance() -> None:
    check = cross_check(synthetic_pools(60), kind="linear", epochs=200, splits=3)
    assert len(check.verifier.splits) == 3 and check.verifier.mean > 0.8
    assert check.vote_share.mean > 0.6 and check.mean_logprob.mean is not None
    with pytest.raises(ValueError, match="at least 2 problems"):
        cross_check(synthetic_pools(1), kind="linear", epochs=10)


def test_verifier_file_round_trips_and_ranks_right_answers_first(tmp_path) -> None:
    pools = synthetic_pools(60)
    verifier = fit_outcome_reward(pools, PoolSettings(samples=8), model="local:m", task="t", kind="mlp", epochs=200, splits=2)
    path = tmp_path / "orm.safetensors"
    verifier.save(path)
    loaded = OutcomeReward.load(path)
    assert read_metadata(path) == loaded.metadata and loaded.metadata.answers == 480
    assert path.with_suffix(".json").exists() and path.stat().st_size < 50_000
    pool = list(synthetic_pools(1, seed=9)[0].candidates)
    assert loaded.score(pool) == pytest.approx(verifier.score(pool))
    scores = loaded.score([cand("3"), cand("3"), cand("3"), cand("41", logprob=-1.4, tokens=120)])
    assert scores[0] > scores[3] and all(0.0 <= s <= 1.0 for s in scores)


def test_a_verifier_with_other_features_is_refused(tmp_path) -> None:
    verifier = fit_outcome_reward(synthetic_pools(10), PoolSettings(samples=8), model="m", task="t", kind="linear", epochs=5, splits=1)
    stale = verifier.metadata.model_copy(update={"features": ("vote_share",)})
    with pytest.raises(ValueError, match="retrain it"):
        OutcomeReward(verifier.head, stale)


def test_scorer_names_take_an_argument_only_where_declared() -> None:
    assert get_scorer("orm:some/file.safetensors").name == "orm" and get_scorer("orm").pool
    with pytest.raises(ValueError, match="takes no argument"):
        get_scorer("mean_logprob:x")
    with pytest.raises(ValueError, match="empty argument"):
        get_scorer("orm:")
    from pydantic import TypeAdapter

    with pytest.raises(ValueError, match="takes no argument"):
        TypeAdapter(ScorerName).validate_python("mean_logprob:x")


def test_pool_scorer_scores_the_whole_pool_once(monkeypatch) -> None:
    from orchestra.scorer import SCORERS

    calls = []

    async def fake(ctx, candidates, argument=None):
        calls.append((len(candidates), argument))
        return [float(i) for i in range(len(candidates))]

    spec = get_scorer("orm")
    monkeypatch.setitem(SCORERS._entries, "orm", spec.__class__(**{**spec.__dict__, "fn": fake}))
    pool = [cand("1"), cand("2"), cand("3")]
    scored = asyncio.run(apply_scorer(None, "orm:f.safetensors", pool))  # type: ignore[arg-type]
    assert [c.scores["orm:f.safetensors"] for c in scored] == [0.0, 1.0, 2.0] and calls == [(3, "f.safetensors")]
    assert asyncio.run(apply_scorer(None, "orm:f.safetensors", scored)) == scored and len(calls) == 1  # type: ignore[arg-type]


TASK = "reasoning_gym:basic_arithmetic?min_terms=2&max_terms=2&max_digits=1&operators=[+]"


@pytest.mark.model
def test_reward_train_outcome_then_the_orm_scorer_in_a_recipe(tmp_path) -> None:
    """Train on 6 real pools, then a recipe whose `samples` node draws those very pools replays them
    from the cache, and best-of-n by `orm:FILE` picks by the trained verifier."""
    from typer.testing import CliRunner

    import orchestra
    from orchestra.cli import app
    from orchestra.recipe import Recipe

    out, cache = tmp_path / "orm.safetensors", tmp_path / "cache.sqlite"
    trained = CliRunner().invoke(app, [
        "reward", "train", "--outcome", "--task", TASK, "--out", str(out), "-n", "6", "--samples", "4",
        "--max-tokens", "64", "--temperature", "0.3", "--dtype", "float32", "--epochs", "30", "--splits", "2", "--cache", str(cache),
    ])
    if "nothing to learn from" in trained.output:
        pytest.fail(f"the pools came out all one class; pick other settings:\n{trained.output}")
    assert trained.exit_code == 0, trained.output
    assert "held-out AUC, verifier" in trained.output and "vote share baseline" in trained.output
    meta = read_metadata(out)
    assert (meta.model, meta.problems, meta.answers, meta.samples_per_problem) == ("local:smollm2-135m-instruct", 6, 24, 4)
    shown = CliRunner().invoke(app, ["reward", "show", str(out)])
    assert shown.exit_code == 0 and "positive_share" in shown.output

    recipe = Recipe.model_validate({
        "name": "orm_pick",
        "models": {"small": {"model": "smollm2-135m-instruct", "dtype": "float32"}},
        "nodes": [
            {"id": "samples", "technique": "sample", "params": {"n": 4, "temperature": 0.3, "max_tokens": 64}},
            {"id": "best", "technique": "best_of_n", "inputs": ["samples"], "params": {"scorer": f"orm:{out}"}},
        ],
    })
    result = orchestra.run(recipe, TASK, split="train", limit=6, cache=cache)
    assert result.summary.usage.cache_hits == 24  # every sample replayed: the training pools are the recipe's
    assert all(r.status == "ok" for r in result.results)
