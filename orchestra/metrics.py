"""Evaluation metrics for sampled answers: pass@k, majority@k, accuracy, coverage, cost per correct.

Small pure functions, so the run summary, the scaling curves and the tests all
compute a figure the same way. Each takes plain numbers or answers, never a
run: whoever holds the samples decides what counts as one answer.

What counts as right is decided here, once: a score of at least 1 (`is_correct`).
A task may give partial credit (reasoning-gym scores some wrong answers 0.5);
that is a separate figure (`partial_credit`), never part of accuracy.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Collection, Hashable, Iterable, Sequence
from typing import TypeVar

Answer = TypeVar("Answer", bound=Hashable)


def _check_k(n: int, k: int) -> None:
    if n < 1:
        raise ValueError(f"need at least one sample, got n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of samples n={n}, got k={k}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chance that at least one of k samples drawn without replacement from n is correct, c of them being so.

    The unbiased estimator of Chen et al. (2021), 1 - C(n-c, k) / C(n, k): one
    large pool of n samples estimates pass@k for every k <= n with less variance
    than drawing k samples once. The binomials are Python integers and their
    ratio is one correctly rounded division, so nothing overflows or cancels
    however large the pool (floats would overflow C(n, k) at a few thousand
    samples; the usual product form accumulates a rounding error per factor).
    """
    _check_k(n, k)
    if not 0 <= c <= n:
        raise ValueError(f"the number correct must be between 0 and n={n}, got c={c}")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _majority_credit(votes: Iterable[Answer | None], correct: Collection[Answer]) -> float:
    """1 if the most common answer is correct, 0 if not; a tie shares the credit among the tied answers."""
    counts = Counter(answer for answer in votes if answer is not None)
    if not counts:
        return 0.0
    top = max(counts.values())
    tied = [answer for answer, count in counts.items() if count == top]
    return sum(answer in correct for answer in tied) / len(tied)


def majority_at_k(
    answers: Sequence[Answer | None],
    correct: Collection[Answer],
    k: int,
    *,
    subsets: int = 1000,
    seed: int = 0,
) -> float:
    """Chance that the most common answer among k samples drawn from the pool `answers` is correct.

    `answers` holds one (normalised) answer per sample, None where a sample gave
    none (it does not vote); `correct` is the set of answers that are right. A
    tie is broken uniformly at random, counted exactly as a fractional credit.
    The expectation runs over every k-subset of the pool when there are at most
    `subsets` of them, else over `subsets` random ones (seeded, so the figure is
    reproducible): averaging over subsets of one large pool, like pass@k, gives a
    smoother curve than one draw of k.
    """
    n = len(answers)
    _check_k(n, k)
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    if math.comb(n, k) <= subsets:
        draws: Iterable[Sequence[int]] = itertools.combinations(range(n), k)
        count = math.comb(n, k)
    else:
        rng = random.Random(seed)
        draws = (rng.sample(range(n), k) for _ in range(subsets))
        count = subsets
    total = sum(_majority_credit((answers[i] for i in draw), correct) for draw in draws)
    return total / count


def is_correct(score: float) -> bool:
    """Exactly right: a task's score of at least 1. Partial credit is wrong."""
    return score >= 1.0


def accuracy(scores: Iterable[float]) -> float:
    """Share of problems exactly right (`is_correct`); 0.0 for no problems."""
    values = list(scores)
    return sum(is_correct(v) for v in values) / len(values) if values else 0.0


def partial_credit(scores: Iterable[float]) -> float:
    """Mean score over problems, partial credit counted as its fraction; 0.0 for no problems."""
    values = list(scores)
    return sum(values) / len(values) if values else 0.0


def coverage(covered: Iterable[bool]) -> float:
    """Share of problems where some candidate was right: what a perfect selector would score."""
    values = list(covered)
    return sum(bool(v) for v in values) / len(values) if values else 0.0


def cost_per_correct(cost: float, correct: int) -> float | None:
    """Cost (tokens, FLOPs, seconds) spent per correct answer; None when nothing was right.

    `correct` is the number of exactly right answers (`is_correct`). None
    rather than infinity: the figure does not exist, and None survives JSON.
    """
    if cost < 0 or correct < 0:
        raise ValueError(f"cost and correct must be non-negative, got cost={cost}, correct={correct}")
    return cost / correct if correct > 0 else None
