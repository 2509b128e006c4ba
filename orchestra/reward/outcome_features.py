"""What the outcome verifier reads about an answer: signals the backend already gave, within its pool.

A 135M model's final answers are right or wrong for reasons its own sampling
shows: a right answer tends to recur across samples, to be produced with
confident tokens, to end cleanly with a parsed answer, and not to ramble into
the token limit. Each feature is cheap (no extra model call) and defined for
any task whose answers can be extracted:

- how often the answer recurs in the pool (plain and log-prob weighted share,
  whether it leads the vote, how many distinct answers the pool holds);
- the candidate's own token log-probabilities (mean, minimum, the last tokens',
  spread);
- its shape (length, whether it ended on its own, whether it gave an answer).

The verifier (`orchestra.reward.outcome_reward`) is a small head over these;
training and scoring both compute them here, so the head always reads what it
was trained on.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from orchestra.candidate import Candidate

#: Feature names, in the order of each vector (stored in a verifier's file and checked on load).
FEATURES: tuple[str, ...] = (
    "vote_share",
    "weighted_vote_share",
    "leads_vote",
    "distinct_answers",
    "has_answer",
    "mean_logprob",
    "min_logprob",
    "tail_logprob",
    "logprob_spread",
    "log_tokens",
    "ended",
)

#: Tokens at the end of an answer whose mean log-prob is `tail_logprob`: where the final answer is written.
TAIL_TOKENS = 8


def _logprob_stats(logprobs: Sequence[float] | None) -> tuple[float, float, float, float]:
    """(mean, min, tail mean, standard deviation); zeros when the backend gave none."""
    if not logprobs:
        return 0.0, 0.0, 0.0, 0.0
    mean = sum(logprobs) / len(logprobs)
    tail = logprobs[-TAIL_TOKENS:]
    spread = math.sqrt(sum((x - mean) ** 2 for x in logprobs) / len(logprobs))
    return mean, min(logprobs), sum(tail) / len(tail), spread


def pool_features(pool: Sequence[Candidate]) -> list[list[float]]:
    """One feature vector per candidate, in `FEATURES` order, each read against the whole pool.

    The pool is every sample drawn for the problem (a candidate alone is a pool of
    one). Answers count as the same when their extracted answers are equal
    strings; a candidate without an answer has no share of the vote.
    """
    if not pool:
        return []
    size = len(pool)
    counts = Counter(c.answer for c in pool if c.answer is not None)
    # A sample's weight in the weighted vote: its mean token probability (geometric mean).
    weights = [math.exp(_logprob_stats(c.logprobs)[0]) if c.logprobs else 1.0 for c in pool]
    weighted: dict[str, float] = {}
    for candidate, weight in zip(pool, weights):
        if candidate.answer is not None:
            weighted[candidate.answer] = weighted.get(candidate.answer, 0.0) + weight
    total_weight = sum(weights) or 1.0
    top = max(counts.values(), default=0)
    vectors = []
    for candidate in pool:
        answer = candidate.answer
        mean, lowest, tail, spread = _logprob_stats(candidate.logprobs)
        vectors.append(
            [
                counts[answer] / size if answer is not None else 0.0,
                weighted[answer] / total_weight if answer is not None else 0.0,
                float(answer is not None and counts[answer] == top),
                len(counts) / size,
                float(answer is not None),
                mean,
                lowest,
                tail,
                spread,
                math.log1p(candidate.completion_tokens),
                float(candidate.finish_reason == "stop"),
            ]
        )
    return vectors
