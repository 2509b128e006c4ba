"""The arithmetic of particle filtering: normalised weights, effective sample size, resampling.

Pure functions over lists of floats, tested against hand-computed cases. Weights
live in log space (a PRM score of 1e-30 is a weight, not an underflow) and are
normalised with the log-sum-exp shift.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Literal

Resampler = Literal["multinomial", "systematic"]


def normalized(log_weights: Sequence[float], temperature: float = 1.0) -> list[float]:
    """softmax(log_weights / temperature): weights that sum to 1.

    A higher temperature flattens the weights (more diversity survives
    resampling); a lower one sharpens them toward the best particle.
    """
    if not log_weights:
        raise ValueError("no weights to normalise")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scaled = [w / temperature for w in log_weights]
    top = max(scaled)
    if top == -math.inf:
        return [1.0 / len(scaled)] * len(scaled)  # every particle impossible: no preference left
    exps = [math.exp(w - top) for w in scaled]
    total = sum(exps)
    return [e / total for e in exps]


def effective_sample_size(weights: Sequence[float]) -> float:
    """1 / sum(w_i^2) of normalised weights: N when they are uniform, 1 when one has them all."""
    return 1.0 / sum(w * w for w in weights)


def systematic_resample(weights: Sequence[float], u: float) -> list[int]:
    """N indices drawn with one uniform `u` in [0, 1): the points (u + k) / N, k = 0..N-1,
    each picking the particle whose slice of the cumulative weights holds it.

    Lower variance than multinomial: a particle of weight w gets floor(N w) or
    ceil(N w) copies, never more or fewer.
    """
    if not 0.0 <= u < 1.0:
        raise ValueError(f"u must be in [0, 1), got {u}")
    n = len(weights)
    picks: list[int] = []
    cumulative, index = weights[0], 0
    for k in range(n):
        point = (u + k) / n
        while point >= cumulative and index < n - 1:
            index += 1
            cumulative += weights[index]
        picks.append(index)
    return picks


def multinomial_resample(weights: Sequence[float], rng: random.Random) -> list[int]:
    """N independent draws of an index with probability its weight."""
    return rng.choices(range(len(weights)), weights=weights, k=len(weights))


def resample(weights: Sequence[float], how: Resampler, rng: random.Random) -> list[int]:
    """Indices of the particles that make up the next population."""
    if how == "systematic":
        return systematic_resample(weights, rng.random())
    return multinomial_resample(weights, rng)
