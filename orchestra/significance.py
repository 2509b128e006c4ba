"""Is a figure, or a difference between two recipes, more than noise? Bootstrap over problems.

Every comparison orchestra prints goes through here, so a table, `summary.json`
and the search's winner rule agree on what "better" means:

- `mean_interval`: a 95% percentile-bootstrap interval of a mean over problems
  (accuracy is the mean of 0/1 correctness).
- `paired_difference`: two recipes on the same problems. The problems are
  resampled together, so what the two share (easy problems both get right)
  cancels, and the interval is much narrower than two separate intervals
  would suggest. A difference whose interval includes 0 is not significant.
- `problems_to_detect`: how many problems a paired comparison needs to see a
  difference of a given size (a normal approximation to McNemar's test), so a
  table on 20 problems can say that 10 points are beyond what it can see.

The resampling is seeded: the same results always print the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
from pydantic import BaseModel, ConfigDict

#: Bootstrap resamples: the interval's ends move by well under a point between seeds.
RESAMPLES = 4000
CONFIDENCE = 0.95


class Interval(BaseModel):
    """A point estimate and its confidence interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    estimate: float
    low: float
    high: float
    confidence: float = CONFIDENCE

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.estimate:.1%} [{self.low:.1%}, {self.high:.1%}]"


class Difference(Interval):
    """A - B over shared problems, with how often each alone was right."""

    problems: int
    only_a: int = 0
    only_b: int = 0

    @property
    def significant(self) -> bool:
        """The interval excludes 0: the sign of the difference is more than noise."""
        return self.low > 0 or self.high < 0

    def points(self) -> str:
        """`+12.0 pts [+4.5, +19.5]`: percentage points, as a difference reads best."""
        return f"{100 * self.estimate:+.1f} pts [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"

    def verdict(self) -> str:
        return "significant" if self.significant else "not significant (CI includes 0)"


#: Resamples drawn at once: bounds memory (a chunk is CHUNK x problems indices) on large runs.
_CHUNK = 250


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, _CHUNK):
        picks = rng.integers(0, len(values), size=(min(_CHUNK, resamples - start), len(values)))
        means.append(values[picks].mean(axis=1))
    return np.concatenate(means)


def _bounds(means: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def mean_interval(
    values: Sequence[float], *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0
) -> Interval:
    """The mean of per-problem values with a percentile-bootstrap interval (problems resampled)."""
    if not values:
        raise ValueError("need at least one value for an interval")
    data = np.asarray(values, dtype=float)
    low, high = _bounds(_resampled_means(data, resamples, seed), confidence)
    return Interval(estimate=float(data.mean()), low=low, high=high, confidence=confidence)


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Difference:
    """Mean of a - b over the same problems (a[i] and b[i] are one problem), paired bootstrap interval."""
    if len(a) != len(b):
        raise ValueError(f"paired values need one value per problem on both sides, got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("need at least one shared problem to compare")
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    low, high = _bounds(_resampled_means(x - y, resamples, seed), confidence)
    return Difference(
        estimate=float((x - y).mean()),
        low=low,
        high=high,
        confidence=confidence,
        problems=len(x),
        only_a=int(((x >= 1) & (y < 1)).sum()),
        only_b=int(((y >= 1) & (x < 1)).sum()),
    )


def problems_to_detect(
    difference: float = 0.10,
    *,
    discordance: float | None = None,
    confidence: float = CONFIDENCE,
    power: float = 0.8,
) -> int:
    """Problems a paired comparison needs to tell a true `difference` in accuracy from 0.

    `discordance` is the share of problems where exactly one of the two recipes
    is right (observed in a comparison; the more two recipes agree, the fewer
    problems a difference needs). Without it, the worst case for a difference of
    that size is assumed: the two recipes disagree on half the problems.
    Normal approximation to McNemar's test (Connor, 1987), at the given two-sided
    confidence and power.
    """
    if not 0 < difference < 1:
        raise ValueError(f"difference must be in (0, 1), got {difference}")
    d = 0.5 if discordance is None else min(1.0, max(discordance, difference))
    z_alpha = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    z_beta = NormalDist().inv_cdf(power)
    n = (z_alpha * math.sqrt(d) + z_beta * math.sqrt(max(d - difference**2, 0.0))) ** 2 / difference**2
    return math.ceil(n)
