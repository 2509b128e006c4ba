"""The `mean_logprob` scorer: how sure the generator was of its own answer, at no extra model call."""

from __future__ import annotations

from orchestra.backends import LOGPROBS
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.scorer import scorer


@scorer("mean_logprob", requires=(LOGPROBS,))
async def mean_logprob(ctx: Context, candidate: Candidate) -> float:
    """Self-certainty: the mean token log-probability the generator gave its own answer."""
    if not candidate.logprobs:
        raise ValueError(f"candidate {candidate.id} has no logprobs to score")
    return sum(candidate.logprobs) / len(candidate.logprobs)
