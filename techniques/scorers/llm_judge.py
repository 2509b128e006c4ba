"""The `llm_judge` scorer: the model's probability that a candidate is correct.

No reasoning first (that is the `verify` technique): the judge is asked
directly, its reply is prefilled with "Verdict:", and the score is P(Yes) /
(P(Yes) + P(No)) in the next-token distribution there, read from the backend's
top log-probabilities. One prefill and one token per candidate, so it is cheap
enough to rank many samples (`best_of_n` with `scorer: llm_judge`).
"""

from __future__ import annotations

from orchestra.backends import CONTINUATION, LOGPROBS
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.problem import Message
from orchestra.scorer import scorer
from orchestra.techniques._candidate_list import clip
from orchestra.techniques._verdict import verdict_probability

JUDGE_PROMPT = """Problem:
{problem}

Proposed solution:
{solution}

Is the proposed solution correct? Answer Yes or No."""


@scorer("llm_judge", requires=(LOGPROBS, CONTINUATION))
async def llm_judge(ctx: Context, candidate: Candidate) -> float:
    """P(Yes) that the node's model gives the question "is this solution correct?"."""
    prompt = JUDGE_PROMPT.format(problem=ctx.problem.prompt, solution=clip(candidate.text) or "(empty)")
    return await verdict_probability(ctx, (Message(role="user", content=prompt),))
