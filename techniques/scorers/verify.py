"""The `verify` scorer: the `verify` technique's reasoned check, with its default parameters.

It lets a selector that names a scorer (`best_of_n` with `scorer: verify`,
`majority_vote` with `weight_by: verify`) verify candidates itself; a pool that
a `verify` node already scored keeps its scores and is not verified again.
"""

from __future__ import annotations

from orchestra.backends import CONTINUATION, LOGPROBS
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.scorer import scorer
from orchestra.techniques.verify import VERIFY_SCORE, VerifyParams, verify_score


@scorer(VERIFY_SCORE, requires=(LOGPROBS, CONTINUATION))
async def verify_scorer(ctx: Context, candidate: Candidate) -> float:
    """The `verify` technique's check with its default parameters."""
    return await verify_score(ctx, candidate, VerifyParams())
