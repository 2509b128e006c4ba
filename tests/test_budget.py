"""Budgets: plan_call arithmetic, reservations, settling, Usage, and limits enforced end to end."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from fake_backend import fake_backend, sample_tokens, vote_recipe, write_sums  # noqa: F401  (fixture)

import orchestra
from orchestra.budget import Budget, BudgetExceeded, BudgetUnenforceable, Limits, Meter, plan_call, settle_call
from orchestra.recipe import Recipe
from orchestra.usage import Usage

# --- Usage ---------------------------------------------------------------------------------


def test_usage_addition_and_subtraction() -> None:
    a = Usage(calls=1, prompt_tokens=10, cached_prompt_tokens=3, completion_tokens=5, flops=1.5, seconds=0.25, cache_hits=2)
    b = Usage(calls=2, prompt_tokens=1, cached_prompt_tokens=0, completion_tokens=7, flops=0.5, seconds=0.5, cache_hits=1)
    total = a + b
    assert total == Usage(calls=3, prompt_tokens=11, cached_prompt_tokens=3, completion_tokens=12, flops=2.0,
                          seconds=0.75, cache_hits=3)
    assert total.total_tokens == 23
    assert total - b == a
    assert a + Usage() == a
    assert sum([a, b, a], Usage()) == a + b + a


def test_usage_is_frozen_and_strict() -> None:
    with pytest.raises(Exception):
        Usage(tokens=1)  # type: ignore[call-arg]
    u = Usage(calls=1)
    with pytest.raises(Exception):
        u.calls = 2  # type: ignore[misc]


# --- plan_call arithmetic -----------------------------------------------------------------


def meter(**limits) -> Meter:
    return Meter("per-problem", Limits(**limits))


def test_no_limits_keeps_max_tokens() -> None:
    m = meter()
    plan = plan_call([m], prompt_tokens=10, n=4, max_tokens=50, flops_per_token=2000.0)
    assert plan.max_tokens == 50 and not plan.shrunk
    assert plan.reservation == Usage(calls=1, prompt_tokens=10, completion_tokens=200, flops=2000.0 * (10 + 200))
    assert m.reserved == plan.reservation
    assert m.used == Usage()
    assert m.headroom("completion_tokens") == math.inf


def test_completion_tokens_limit_shrinks_max_tokens() -> None:
    m = meter(completion_tokens=100)
    plan = plan_call([m], prompt_tokens=10, n=4, max_tokens=50, flops_per_token=0.0)
    assert plan.max_tokens == 25 and plan.shrunk  # 100 / 4 samples
    assert plan.reservation.completion_tokens == 100
    assert m.headroom("completion_tokens") == 0


def test_fractional_fit_rounds_down() -> None:
    m = meter(completion_tokens=103)
    plan = plan_call([m], prompt_tokens=10, n=4, max_tokens=50, flops_per_token=0.0)
    assert plan.max_tokens == 25  # floor(103 / 4)
    assert plan.reservation.completion_tokens <= 103


def test_limit_above_need_does_not_shrink() -> None:
    m = meter(completion_tokens=1000, total_tokens=1000)
    plan = plan_call([m], prompt_tokens=10, n=4, max_tokens=50, flops_per_token=0.0)
    assert plan.max_tokens == 50 and not plan.shrunk


def test_total_tokens_limit_counts_the_prompt() -> None:
    m = meter(total_tokens=100)
    plan = plan_call([m], prompt_tokens=20, n=4, max_tokens=50, flops_per_token=0.0)
    assert plan.max_tokens == 20  # (100 - 20 prompt) / 4
    assert plan.reservation.total_tokens == 100


def test_flops_limit() -> None:
    # 1000 parameters -> 2000 FLOPs per token; 2e6 FLOPs buy 1000 tokens, 100 of them the prompt.
    m = meter(flops=2e6)
    plan = plan_call([m], prompt_tokens=100, n=3, max_tokens=500, flops_per_token=2000.0)
    assert plan.max_tokens == 300  # (1000 - 100) / 3
    assert plan.reservation.flops == pytest.approx(2e6)


def test_flops_limit_ignored_when_flops_unknown() -> None:
    m = meter(flops=10.0)  # a backend with no parameter count reports flops_per_token=0
    plan = plan_call([m], prompt_tokens=100, n=3, max_tokens=500, flops_per_token=0.0)
    assert plan.max_tokens == 500


def test_tightest_meter_wins() -> None:
    problem, run = meter(completion_tokens=100), Meter("per-run", Limits(total_tokens=70))
    plan = plan_call([problem, run], prompt_tokens=10, n=2, max_tokens=80, flops_per_token=0.0)
    assert plan.max_tokens == 30  # per-problem allows 50, per-run (70 - 10) / 2 = 30
    assert problem.reserved == run.reserved == plan.reservation


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ({"completion_tokens": 3}, "completion_tokens"),  # 3 / 4 < 1 token per sample
        ({"total_tokens": 23}, "total_tokens"),  # (23 - 20) / 4 < 1
        ({"flops": 2000.0 * 23}, "flops"),  # 23 tokens of FLOPs, 20 of them the prompt
    ],
)
def test_refuses_below_one_token_per_sample(limits: dict, field: str) -> None:
    m = meter(**limits)
    with pytest.raises(BudgetExceeded) as info:
        plan_call([m], prompt_tokens=20, n=4, max_tokens=50, flops_per_token=2000.0)
    assert info.value.field_name == field
    assert info.value.scope == "per-problem"
    assert f"per-problem budget: {field} limit" in str(info.value)
    assert m.reserved == Usage()  # nothing reserved by a refused call


def test_exactly_one_token_per_sample_is_allowed() -> None:
    m = meter(completion_tokens=4)
    plan = plan_call([m], prompt_tokens=20, n=4, max_tokens=50, flops_per_token=0.0)
    assert plan.max_tokens == 1


def test_refusal_reports_what_the_call_needs() -> None:
    with pytest.raises(BudgetExceeded) as info:
        plan_call([meter(completion_tokens=3)], prompt_tokens=20, n=4, max_tokens=50, flops_per_token=0.0)
    assert info.value.needed > info.value.limit  # it "would be crossed": at least 4 tokens (1 per sample)


def test_calls_limit() -> None:
    m = meter(calls=2)
    first = plan_call([m], prompt_tokens=1, n=1, max_tokens=5, flops_per_token=0.0)
    plan_call([m], prompt_tokens=1, n=1, max_tokens=5, flops_per_token=0.0)
    with pytest.raises(BudgetExceeded) as info:
        plan_call([m], prompt_tokens=1, n=1, max_tokens=5, flops_per_token=0.0)
    assert info.value.field_name == "calls"
    settle_call([m], first, Usage(calls=1, prompt_tokens=1, completion_tokens=5))
    with pytest.raises(BudgetExceeded):  # a finished call still counts
        plan_call([m], prompt_tokens=1, n=1, max_tokens=5, flops_per_token=0.0)


def test_prompt_tokens_limit() -> None:
    m = meter(prompt_tokens=30)
    plan_call([m], prompt_tokens=20, n=1, max_tokens=5, flops_per_token=0.0)
    with pytest.raises(BudgetExceeded) as info:
        plan_call([m], prompt_tokens=11, n=1, max_tokens=5, flops_per_token=0.0)
    assert info.value.field_name == "prompt_tokens"
    assert info.value.needed == 11
    plan = plan_call([m], prompt_tokens=10, n=1, max_tokens=5, flops_per_token=0.0)  # exactly fits
    assert plan.reservation.prompt_tokens == 10


def test_seconds_limit() -> None:
    m = Meter("per-run", Limits(seconds=1.0), started=time.monotonic() - 2.0)
    with pytest.raises(BudgetExceeded) as info:
        plan_call([m], prompt_tokens=1, n=1, max_tokens=5, flops_per_token=0.0)
    assert info.value.field_name == "seconds"
    assert info.value.scope == "per-run"


@pytest.mark.parametrize("limits", [{"prompt_tokens": 10**6}, {"total_tokens": 10**6}, {"flops": 1e18}])
def test_an_estimated_prompt_cannot_be_planned_against_a_limit_that_counts_it(limits: dict) -> None:
    m = meter(**limits)
    with pytest.raises(BudgetUnenforceable, match=f"per-problem budget limits {next(iter(limits))}.*tokenizer"):
        plan_call([m], prompt_tokens=10, n=2, max_tokens=50, flops_per_token=2.0, prompt_estimated=True)
    assert m.reserved == Usage()


def test_an_estimated_prompt_is_fine_where_no_limit_counts_it() -> None:
    plan = plan_call([meter(completion_tokens=100, calls=3, flops=1.0)], prompt_tokens=10, n=2, max_tokens=50,
                     flops_per_token=0.0, prompt_estimated=True)  # flops unknown: that limit does not apply
    assert plan.max_tokens == 50


def test_refusal_by_one_meter_reserves_nothing_anywhere() -> None:
    roomy, tight = meter(completion_tokens=1000), Meter("per-run", Limits(completion_tokens=2))
    with pytest.raises(BudgetExceeded) as info:
        plan_call([roomy, tight], prompt_tokens=1, n=4, max_tokens=5, flops_per_token=0.0)
    assert info.value.scope == "per-run"
    assert roomy.reserved == Usage() and tight.reserved == Usage()


def test_reservations_keep_concurrent_calls_within_the_limit() -> None:
    m = meter(completion_tokens=100)
    first = plan_call([m], prompt_tokens=5, n=1, max_tokens=80, flops_per_token=0.0)
    second = plan_call([m], prompt_tokens=5, n=1, max_tokens=80, flops_per_token=0.0)
    assert (first.max_tokens, second.max_tokens) == (80, 20)
    assert second.shrunk and not first.shrunk
    assert first.reservation.completion_tokens + second.reservation.completion_tokens <= 100
    with pytest.raises(BudgetExceeded):
        plan_call([m], prompt_tokens=5, n=1, max_tokens=80, flops_per_token=0.0)


def test_settle_releases_reservation_and_books_actual_usage() -> None:
    m = meter(completion_tokens=100)
    first = plan_call([m], prompt_tokens=5, n=1, max_tokens=80, flops_per_token=0.0)
    second = plan_call([m], prompt_tokens=5, n=1, max_tokens=80, flops_per_token=0.0)
    settle_call([m], first, Usage(calls=1, prompt_tokens=5, completion_tokens=30))
    assert m.used == Usage(calls=1, prompt_tokens=5, completion_tokens=30)
    assert m.reserved == second.reservation
    assert m.headroom("completion_tokens") == 100 - 30 - 20
    third = plan_call([m], prompt_tokens=5, n=2, max_tokens=80, flops_per_token=0.0)
    assert third.max_tokens == 25  # the 50 tokens left, over 2 samples
    settle_call([m], second, Usage(calls=1, prompt_tokens=5, completion_tokens=20))
    settle_call([m], third, Usage())  # a failed call spends nothing but frees its reservation
    assert m.reserved == Usage()
    assert m.used.completion_tokens == 50 and m.used.calls == 2


def test_budget_schema() -> None:
    budget = Budget.model_validate({"per_problem": {"completion_tokens": 10}, "per_run": {"flops": 1e9}})
    assert budget.per_run.flops == 1e9 and budget.per_problem.calls is None
    with pytest.raises(Exception):
        Limits(completion_tokens=0)
    with pytest.raises(Exception):
        Limits(tokens=5)  # type: ignore[call-arg]


# --- end to end with the fake backend ------------------------------------------------------

N = 4
PER_PROBLEM_TOKENS = sum(sample_tokens("", 0, k) for k in range(N))  # 11 + 12 + 13 + 11 = 47


def run(tmp_path: Path, count: int, *, budget: dict, max_tokens: int = 64, concurrency: int = 1):
    spec = write_sums(tmp_path / "sums.jsonl", count)
    recipe = Recipe.model_validate(vote_recipe(n=N, max_tokens=max_tokens, budget=budget))
    return orchestra.run(recipe, spec, limit=count, cache=False, concurrency=concurrency)


def test_fake_completion_lengths() -> None:
    assert PER_PROBLEM_TOKENS == 47


def test_per_problem_limit_shrinks_calls(tmp_path: Path, fake_backend) -> None:
    result = run(tmp_path, 2, budget={"per_problem": {"completion_tokens": 60}})
    for r in result.results:
        assert r.status == "ok", r
        assert r.shrunk_calls == 1
        assert r.usage.completion_tokens == PER_PROBLEM_TOKENS <= 60
        assert r.score == 1.0  # 15 tokens per sample still fit every (11-13 token) answer
    assert [c.max_tokens for c in fake_backend.log.calls] == [15, 15]  # floor(60 / 4)


def test_per_problem_limit_too_small_cuts_problem_short(tmp_path: Path, fake_backend) -> None:
    result = run(tmp_path, 2, budget={"per_problem": {"completion_tokens": 3}})
    for r in result.results:
        assert r.status == "budget"
        assert r.cut_short is not None
        assert "per-problem" in r.cut_short and "completion_tokens" in r.cut_short and "3" in r.cut_short
        assert r.answer is None and r.score == 0.0
        assert r.usage.completion_tokens == 0
    assert fake_backend.log.calls == []  # refused before calling the backend
    assert result.summary.cut_short == 2 and result.summary.errors == 0


def test_per_problem_limit_truncates_completions(tmp_path: Path, fake_backend) -> None:
    result = run(tmp_path, 1, budget={"per_problem": {"completion_tokens": 20}})
    (r,) = result.results
    assert r.status == "ok" and r.shrunk_calls == 1
    assert r.usage.completion_tokens == 4 * 5  # every sample cut at floor(20 / 4) = 5 tokens
    assert r.answer is None  # truncated before "Answer:"


def test_per_run_limit_finishes_early_problems_and_cuts_later_ones(tmp_path: Path, fake_backend) -> None:
    # Sequential problems, 4 samples of up to 16 tokens each (reserve 64, spend 47), run limit 150:
    # p0, p1 run in full (used 94); p2 gets floor(56 / 4) = 14 tokens per sample (shrunk, still
    # enough: used 141); p3 gets floor(9 / 4) = 2 (shrunk, truncated: used 149); p4, p5 get < 1: cut.
    result = run(tmp_path, 6, budget={"per_run": {"completion_tokens": 150}}, max_tokens=16)
    assert [r.status for r in result.results] == ["ok", "ok", "ok", "ok", "budget", "budget"]
    assert [r.shrunk_calls for r in result.results] == [0, 0, 1, 1, 0, 0]
    assert [r.usage.completion_tokens for r in result.results] == [47, 47, 47, 8, 0, 0]
    assert [r.score for r in result.results[:3]] == [1.0, 1.0, 1.0]
    assert "per-run budget: completion_tokens limit 150" in result.results[4].cut_short
    assert result.summary.usage.completion_tokens == 149 <= 150
    assert result.summary.cut_short == 2
    assert len(fake_backend.log.calls) == 4


def test_resumed_run_counts_what_finished_problems_spent(tmp_path: Path, fake_backend) -> None:
    spec = write_sums(tmp_path / "sums.jsonl", 4)
    recipe = Recipe.model_validate(
        vote_recipe(n=N, max_tokens=16, budget={"per_run": {"completion_tokens": 100}})
    )
    out = tmp_path / "run"
    first = orchestra.run(recipe, spec, limit=2, cache=False, out=out)
    assert [r.status for r in first.results] == ["ok", "ok"]
    spent = first.summary.usage.completion_tokens
    resumed = orchestra.run(recipe, spec, limit=4, cache=False, out=out)
    assert resumed.results[:2] == first.results
    assert resumed.summary.usage.completion_tokens <= 100  # not `spent` + a fresh 100
    assert resumed.summary.usage.completion_tokens > spent
    assert "budget" in [r.status for r in resumed.results[2:]]


@pytest.mark.parametrize("field", ["completion_tokens", "total_tokens"])
def test_concurrent_problems_never_jointly_exceed_the_run_limit(tmp_path: Path, fake_backend, field: str) -> None:
    fake_backend.delay = 0.005  # keep every problem's call in flight together
    limit = 200 if field == "completion_tokens" else 260
    result = run(tmp_path, 8, budget={"per_run": {field: limit}}, max_tokens=16, concurrency=8)
    used = result.summary.usage
    assert (used.completion_tokens if field == "completion_tokens" else used.total_tokens) <= limit
    assert result.summary.cut_short > 0
    assert any(r.status == "ok" for r in result.results)
    assert fake_backend.log.max_in_flight > 1


def test_per_problem_and_per_run_limits_together(tmp_path: Path, fake_backend) -> None:
    budget = {"per_problem": {"completion_tokens": 48, "calls": 1}, "per_run": {"total_tokens": 200}}
    result = run(tmp_path, 5, budget=budget, max_tokens=16, concurrency=2)
    for r in result.results:
        assert r.usage.completion_tokens <= 48
        assert r.usage.calls <= 1
    assert result.summary.usage.total_tokens <= 200
    assert result.summary.cut_short >= 1


def test_flops_are_counted(tmp_path: Path, fake_backend) -> None:
    result = run(tmp_path, 1, budget={})
    (r,) = result.results
    assert r.usage.flops == pytest.approx(2 * 1000 * (r.usage.prompt_tokens + r.usage.completion_tokens))
