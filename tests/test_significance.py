"""The statistics every comparison goes through: bootstrap intervals, paired differences, problems needed."""

from __future__ import annotations

import random

import pytest

from orchestra.significance import Difference, Interval, mean_interval, paired_difference, problems_to_detect


def correctness(n: int, accuracy: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < accuracy) for _ in range(n)]


# --- intervals of a mean ---------------------------------------------------------------------


def test_interval_holds_the_mean_and_narrows_with_more_problems() -> None:
    small = mean_interval(correctness(20, 0.6, seed=1))
    large = mean_interval(correctness(500, 0.6, seed=1))
    for interval in (small, large):
        assert interval.low < interval.estimate < interval.high and interval.contains(interval.estimate)
        assert 0.0 <= interval.low and interval.high <= 1.0
    assert large.high - large.low < (small.high - small.low) / 3  # width ~ 1/sqrt(n): 5x narrower at 25x n
    # a normal approximation's half-width at n=500, p~0.6 is 1.96 * sqrt(0.24 / 500) ~ 0.043
    assert (large.high - large.low) / 2 == pytest.approx(1.96 * (large.estimate * (1 - large.estimate) / 500) ** 0.5, rel=0.1)


def test_interval_is_seeded_and_degenerate_without_spread() -> None:
    values = correctness(40, 0.5, seed=2)
    assert mean_interval(values) == mean_interval(values)
    rng = random.Random(5)
    spread = [rng.random() for _ in range(40)]  # continuous: the seed moves the quantiles
    assert mean_interval(spread, seed=1) != mean_interval(spread, seed=2)
    assert mean_interval([1.0] * 10) == Interval(estimate=1.0, low=1.0, high=1.0)
    with pytest.raises(ValueError, match="at least one value"):
        mean_interval([])


def test_interval_prints_as_percentages() -> None:
    assert str(Interval(estimate=0.62, low=0.551, high=0.689)) == "62.0% [55.1%, 68.9%]"


# --- paired differences ------------------------------------------------------------------------


def test_identical_runs_differ_by_zero_and_not_significantly() -> None:
    values = correctness(50, 0.5, seed=3)
    same = paired_difference(values, values)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    assert not same.significant and same.verdict() == "not significant (CI includes 0)"
    assert (same.only_a, same.only_b, same.problems) == (0, 0, 50)


def test_a_clear_difference_is_significant_in_either_direction() -> None:
    # b is right on 60 of 200; a on those and 40 more: +20 points, a alone right on 40, b alone on 0
    b = [1.0] * 60 + [0.0] * 140
    a = [1.0] * 100 + [0.0] * 100
    better = paired_difference(a, b)
    assert better.estimate == pytest.approx(0.2) and better.low > 0 and better.significant
    assert (better.only_a, better.only_b) == (40, 0)
    assert better.verdict() == "significant" and better.points().startswith("+20.0 pts [+")
    worse = paired_difference(b, a)
    assert worse.high < 0 and worse.significant and worse.points().startswith("-20.0 pts [-")


def test_pairing_sees_what_two_separate_intervals_cannot() -> None:
    """One extra problem right in 10 of 100, everything else shared: separate intervals overlap,
    the paired one excludes 0."""
    b = correctness(100, 0.5, seed=4)
    a = list(b)
    wrong = [i for i, v in enumerate(b) if v == 0.0][:10]
    for i in wrong:
        a[i] = 1.0
    ia, ib = mean_interval(a), mean_interval(b)
    assert ia.low < ib.high  # the two intervals overlap
    assert paired_difference(a, b).significant


def test_a_small_difference_on_few_problems_is_not_significant() -> None:
    # of 20: a alone right on 2, b alone on 1, both on 8, neither on 9
    a = [1.0, 1.0, 0.0] + [1.0] * 8 + [0.0] * 9
    b = [0.0, 0.0, 1.0] + [1.0] * 8 + [0.0] * 9
    difference = paired_difference(a, b)
    assert difference.estimate == pytest.approx(0.05) and difference.contains(0.0) and not difference.significant


def test_paired_difference_needs_one_value_per_problem_on_both_sides() -> None:
    with pytest.raises(ValueError, match="one value per problem"):
        paired_difference([1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="at least one shared problem"):
        paired_difference([], [])


def test_difference_round_trips_through_json() -> None:
    difference = paired_difference([1.0, 1.0, 0.0], [0.0, 1.0, 0.0])
    assert Difference.model_validate_json(difference.model_dump_json()) == difference


# --- problems needed ---------------------------------------------------------------------------


def test_problems_to_detect_falls_as_recipes_agree_more() -> None:
    needed = [problems_to_detect(0.10, discordance=d) for d in (0.6, 0.4, 0.2, 0.1)]
    assert needed == sorted(needed, reverse=True) and len(set(needed)) == 4
    assert problems_to_detect(0.10) == problems_to_detect(0.10, discordance=0.5)  # the default: worst case
    # Connor (1987) at alpha 0.05, power 0.8, discordance 0.3, difference 0.1: about 234 problems
    assert problems_to_detect(0.10, discordance=0.3) == pytest.approx(234, abs=3)


def test_larger_differences_need_fewer_problems_and_agreement_has_a_floor() -> None:
    assert problems_to_detect(0.20, discordance=0.3) < problems_to_detect(0.10, discordance=0.3)
    # two recipes that never disagree cannot show a 10-point difference; the floor is discordance = difference
    assert problems_to_detect(0.10, discordance=0.0) == problems_to_detect(0.10, discordance=0.10)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="difference must be in"):
            problems_to_detect(bad)
