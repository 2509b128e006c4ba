"""Metrics against brute force: pass@k over every k-subset, majority@k over every ordering of the pool."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from orchestra.metrics import accuracy, cost_per_correct, coverage, is_correct, majority_at_k, partial_credit, pass_at_k
from orchestra.results import ProblemResult, RunSummary
from orchestra.usage import Usage


def pass_at_k_by_enumeration(n: int, c: int, k: int) -> Fraction:
    """Share of the k-subsets of a pool (first c correct) holding a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(i < c for i in s) for s in subsets), len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_enumeration_over_subsets(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(pass_at_k_by_enumeration(n, c, k)), abs=1e-15)


def test_pass_at_k_edge_cases() -> None:
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 0, 10) == 0.0  # nothing right: never covered
    assert pass_at_k(10, 10, 1) == 1.0 and pass_at_k(10, 10, 10) == 1.0  # everything right
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the share correct
    assert pass_at_k(10, 1, 10) == 1.0  # the whole pool holds the one correct sample
    assert pass_at_k(10, 3, 8) == 1.0  # only 7 wrong samples: any 8 include a right one


@pytest.mark.parametrize(
    ("n", "c", "k", "message"),
    [(4, 1, 5, "k must be between 1 and the number of samples n=4"), (4, 1, 0, "k must be between"),
     (4, 5, 2, "number correct"), (4, -1, 2, "number correct"), (0, 0, 1, "at least one sample")],
)
def test_pass_at_k_rejects_impossible_arguments(n: int, c: int, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pass_at_k(n, c, k)


def test_pass_at_k_is_exact_for_large_pools() -> None:
    """C(5000, 2500) overflows a float; the integer ratio does not, and matches exact rational arithmetic."""
    n, c, k = 5000, 7, 2500
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == float(exact)
    assert 0.99 < pass_at_k(n, c, k) < 1.0


def majority_by_permutations(answers: list, correct: set, k: int) -> Fraction:
    """Every ordering of the pool is equally likely: take its first k, break ties by first appearance.

    Independent of the implementation's tie rule (fractional credit): by symmetry,
    first appearance in a random order is a uniformly random tie-break.
    """
    total, count = Fraction(0), 0
    for order in itertools.permutations(range(len(answers))):
        drawn = [answers[i] for i in order[:k]]
        votes = [a for a in drawn if a is not None]
        count += 1
        if not votes:
            continue
        tally = {a: votes.count(a) for a in votes}
        top = max(tally.values())
        winner = next(a for a in votes if tally[a] == top)
        total += winner in correct
    return total / count


@pytest.mark.parametrize(
    "answers",
    [
        ["4", "5", "4", "6", None],
        ["1", "2", "3", "1", "2", "1"],
        [None, None, "7"],
        ["a", "b", "a", "b"],
    ],
)
def test_majority_at_k_matches_every_ordering_of_the_pool(answers: list) -> None:
    for correct in ({answers[0]} - {None}, {"2", "b", "7"}):
        for k in range(1, len(answers) + 1):
            expected = float(majority_by_permutations(answers, correct, k))
            assert majority_at_k(answers, correct, k) == pytest.approx(expected, abs=1e-12), (answers, correct, k)


def test_majority_at_k_simple_cases() -> None:
    pool = ["4", "4", "5", None]
    assert majority_at_k(pool, {"4"}, 1) == pytest.approx(0.5)  # majority of one sample is that sample
    assert majority_at_k(pool, {"4"}, 4) == 1.0
    assert majority_at_k(pool, {"5"}, 4) == 0.0
    assert majority_at_k(["4", "5"], {"4"}, 2) == 0.5  # a tie: half the credit
    assert majority_at_k([None, None], {"4"}, 2) == 0.0  # nobody voted
    with pytest.raises(ValueError, match="k must be between"):
        majority_at_k(pool, {"4"}, 5)
    with pytest.raises(ValueError, match="subsets"):
        majority_at_k(pool, {"4"}, 2, subsets=0)


def test_majority_at_k_samples_subsets_of_large_pools_reproducibly() -> None:
    """C(40, 5) = 658008 subsets: estimated from random ones, seeded, close to the exact value."""
    pool = ["right"] * 12 + ["wrong-a"] * 10 + ["wrong-b"] * 10 + [None] * 8
    exact = majority_at_k(pool, {"right"}, 5, subsets=math.comb(40, 5))
    estimate = majority_at_k(pool, {"right"}, 5, subsets=4000, seed=1)
    assert estimate == majority_at_k(pool, {"right"}, 5, subsets=4000, seed=1)
    assert estimate != majority_at_k(pool, {"right"}, 5, subsets=4000, seed=2)
    assert estimate == pytest.approx(exact, abs=0.03)


def test_accuracy_coverage_and_cost_per_correct() -> None:
    assert accuracy([1.0, 0.0, 0.5, 1.0]) == 0.5  # exact: the half-credit answer is wrong
    assert partial_credit([1.0, 0.0, 0.5, 1.0]) == pytest.approx(0.625)
    assert accuracy([]) == 0.0 and partial_credit([]) == 0.0
    assert is_correct(1.0) and not is_correct(0.999) and not is_correct(0.5)
    assert coverage([True, False, True, True]) == 0.75
    assert coverage(iter([])) == 0.0
    assert cost_per_correct(1200, 3) == 400
    assert cost_per_correct(1200, 0) is None
    assert cost_per_correct(0, 2) == 0
    with pytest.raises(ValueError):
        cost_per_correct(-1, 2)


def test_run_summary_uses_the_metrics() -> None:
    results = [
        ProblemResult(problem_id="a", status="ok", score=1.0, coverage=True, usage=Usage(prompt_tokens=10, completion_tokens=90, flops=1e6)),
        ProblemResult(problem_id="b", status="ok", score=0.0, coverage=True, usage=Usage(prompt_tokens=10, completion_tokens=40, flops=4e5)),
        ProblemResult(problem_id="c", status="ok", score=0.0, coverage=False, usage=Usage(prompt_tokens=10, completion_tokens=50, flops=6e5)),
    ]
    summary = RunSummary.of(results, recipe="r", task=None, split=None, complete=True, wall_seconds=1.0, model_seconds=0.5)
    assert summary.accuracy == pytest.approx(1 / 3) and summary.coverage == pytest.approx(2 / 3)
    assert summary.tokens_per_problem == pytest.approx(70)
    assert summary.tokens_per_correct == pytest.approx(210)  # all tokens, one correct answer
    assert summary.flops_per_correct == pytest.approx(2e6)
    wrong = [r.model_copy(update={"score": 0.0}) for r in results]
    nothing = RunSummary.of(wrong, recipe="r", task=None, split=None, complete=True, wall_seconds=1.0, model_seconds=0.5)
    assert nothing.tokens_per_correct is None and nothing.accuracy == 0.0
    assert summary.accuracy_ci is not None and summary.accuracy_ci.contains(summary.accuracy)
    assert summary.partial_credit == pytest.approx(1 / 3)


def test_partial_credit_is_not_correct_anywhere_in_a_summary() -> None:
    """A sign error scored 0.5 by the task: not counted right, not in tokens per correct; kept as partial credit."""
    usage = Usage(prompt_tokens=10, completion_tokens=90)
    results = [
        ProblemResult(problem_id="right", status="ok", score=1.0, usage=usage),
        ProblemResult(problem_id="half", status="ok", score=0.5, usage=usage),
    ]
    assert [r.correct for r in results] == [True, False]
    summary = RunSummary.of(results, recipe="r", task=None, split=None, complete=True, wall_seconds=1.0, model_seconds=0.5)
    assert summary.accuracy == 0.5 and summary.partial_credit == pytest.approx(0.75)
    assert summary.tokens_per_correct == pytest.approx(200)  # both problems' tokens, one exactly right answer
    assert summary.accuracy_ci is not None and summary.accuracy_ci.estimate == 0.5


def test_an_empty_run_has_no_interval_and_an_old_summary_still_reads() -> None:
    empty = RunSummary.of([], recipe="r", task=None, split=None, complete=True, wall_seconds=0.0, model_seconds=0.0)
    assert empty.accuracy_ci is None and empty.accuracy == 0.0
    old = empty.model_dump(exclude={"accuracy_ci", "partial_credit"})  # a summary.json written before they existed
    restored = RunSummary.model_validate(old)
    assert restored.accuracy_ci is None and restored.partial_credit is None
