"""Particle filtering's arithmetic against hand-computed cases: weights, ESS, resampling."""

from __future__ import annotations

import math
import random

import pytest

from orchestra.techniques.stepwise._resampling import (
    effective_sample_size,
    multinomial_resample,
    normalized,
    systematic_resample,
)


def test_weights_are_the_softmax_of_log_weights() -> None:
    assert normalized([math.log(1), math.log(3)]) == pytest.approx([0.25, 0.75])
    # temperature 2 takes square roots of the likelihoods: 1 : sqrt(3)
    assert normalized([0.0, math.log(3)], temperature=2.0) == pytest.approx(
        [1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))]
    )
    # shifted log weights give the same weights (log-sum-exp), even far below exp's range
    assert normalized([-1000.0, -1000.0 + math.log(3)]) == pytest.approx([0.25, 0.75])
    assert normalized([-math.inf, -math.inf]) == [0.5, 0.5]
    with pytest.raises(ValueError):
        normalized([0.0], temperature=0.0)


def test_effective_sample_size() -> None:
    assert effective_sample_size([0.25, 0.25, 0.25, 0.25]) == pytest.approx(4.0)
    assert effective_sample_size([1.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert effective_sample_size([0.25, 0.75]) == pytest.approx(1 / (0.0625 + 0.5625))  # 1.6


def test_systematic_resampling_by_hand() -> None:
    weights = [0.1, 0.2, 0.7]  # cumulative 0.1, 0.3, 1.0
    # u = 0.5: points 0.5/3, 1.5/3, 2.5/3 = 0.167, 0.5, 0.833
    assert systematic_resample(weights, 0.5) == [1, 2, 2]
    # u = 0: points 0, 0.333, 0.667
    assert systematic_resample(weights, 0.0) == [0, 2, 2]
    # u = 0.99: points 0.33, 0.663, 0.997
    assert systematic_resample(weights, 0.99) == [2, 2, 2]
    with pytest.raises(ValueError):
        systematic_resample(weights, 1.0)


def test_systematic_resampling_copies_floor_or_ceil_of_n_w() -> None:
    rng = random.Random(0)
    for _ in range(200):
        raw = [rng.random() for _ in range(7)]
        weights = [w / sum(raw) for w in raw]
        picks = systematic_resample(weights, rng.random())
        for i, w in enumerate(weights):
            assert math.floor(7 * w) - 1e-9 <= picks.count(i) <= math.ceil(7 * w) + 1e-9


def test_multinomial_resampling_frequencies_follow_weights() -> None:
    rng = random.Random(1)
    counts = [0, 0, 0]
    for _ in range(3000):
        for i in multinomial_resample([0.1, 0.2, 0.7], rng):
            counts[i] += 1
    shares = [c / 9000 for c in counts]
    assert shares == pytest.approx([0.1, 0.2, 0.7], abs=0.02)
