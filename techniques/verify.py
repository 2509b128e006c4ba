"""LLM verifier: reason about a candidate, then give a verdict read as a probability.

The verifier first writes its check of the candidate, stopped at "Verdict:"
(or at its token limit, or wherever it ended); then its reply is continued by
one token after "Verdict:" and the score is P(Yes) / (P(Yes) + P(No)) at that
position, from the backend's top log-probabilities (see `_verdict`). Because the
verdict is always asked for, a model that never writes one still gets a score;
a position where neither Yes nor No is among the 20 likeliest tokens scores
0.5. The score goes to `Candidate.scores["verify"]`, so `majority_vote` with
`weight_by: verify` or `best_of_n` with `scorer: verify` reuse it instead of
verifying again.

The `verify` technique takes parameters (tokens, checks per candidate); the
`verify` scorer (`scorers/verify.py`) is the same check with the default
parameters, for selectors that name a scorer.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestra.backends import CONTINUATION, LOGPROBS, GenerationRequest
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.problem import Message
from orchestra.technique import technique
from orchestra.techniques._candidate_list import clip
from orchestra.techniques._verdict import VERDICT_CUE, verdict_probability

VERIFY_PROMPT = """Problem:
{problem}

Proposed solution:
{solution}

Is the proposed solution correct? Check it step by step, then end with "Verdict: Yes" if it is correct or "Verdict: No" if it is not."""

#: The score name the verifier writes.
VERIFY_SCORE = "verify"


class VerifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=128, ge=1, description="Tokens of reasoning before the verdict.")
    checks: int = Field(default=1, ge=1, le=32, description="Independent checks per candidate; the score is their mean.")
    temperature: float = Field(default=0.0, ge=0.0, le=5.0, description="For the reasoning; must be > 0 when checks > 1.")

    @model_validator(mode="after")
    def _distinct_checks(self) -> VerifyParams:
        if self.checks > 1 and self.temperature == 0.0:
            raise ValueError("checks > 1 needs temperature > 0: greedy checks would all be the same")
        return self


def verify_messages(problem: str, candidate: Candidate) -> tuple[Message, ...]:
    prompt = VERIFY_PROMPT.format(problem=problem, solution=clip(candidate.text) or "(empty)")
    return (Message(role="user", content=prompt),)


async def verify_score(ctx: Context, candidate: Candidate, params: VerifyParams) -> float:
    """Mean P(Yes) over `checks` reasoned verdicts on one candidate."""
    messages = verify_messages(ctx.problem.prompt, candidate)
    reasoning = await ctx.model().generate(
        GenerationRequest(
            messages=messages,
            n=params.checks,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            stop=(VERDICT_CUE,),
            seed=ctx.seed,
        )
    )
    verdicts = await asyncio.gather(
        *(verdict_probability(ctx, messages, check.text) for check in reasoning.completions)
    )
    return sum(verdicts) / len(verdicts)


@technique("verify", VerifyParams, requires=(LOGPROBS, CONTINUATION))
async def verify(ctx: Context, inputs: list[Candidate], params: VerifyParams) -> list[Candidate]:
    """Score each candidate with reasoning then a verdict: scores["verify"] = P(Yes) (order kept)."""
    scores = await asyncio.gather(*(verify_score(ctx, c, params) for c in inputs))
    return [c.with_score(VERIFY_SCORE, s) for c, s in zip(inputs, scores)]

