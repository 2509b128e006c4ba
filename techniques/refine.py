"""Self-Refine (Madaan et al., 2023): feedback on an answer, then a better answer, in rounds.

Each input candidate starts a chain (with no inputs, the chain starts from one
fresh answer). A round asks the model for feedback on the current answer,
ending with "Verdict: Yes" (correct as it is) or "Verdict: No"; then it rewrites
the answer from that feedback. The chain stops early when the feedback's last
written verdict is Yes: the model says there is nothing left to fix. Feedback
with no verdict, or "No", leads to a rewrite. Chains run concurrently.

Every rewrite names the answer it improved as its parent and carries the
feedback as a critique keyed by that parent's id; `scores["refine_rounds"]`
counts the rewrites a chain made.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.problem import Message
from orchestra.technique import technique
from orchestra.techniques._candidate_list import clip
from orchestra.techniques._verdict import written_verdict

FEEDBACK_PROMPT = """Problem:
{problem}

Proposed solution:
{solution}

Give feedback on the proposed solution: check each step and point out any mistake. Then end with "Verdict: Yes" if it is fully correct or "Verdict: No" if it needs fixing."""

REFINE_PROMPT = """A previous solution to the problem below, and feedback on it:

Previous solution:
{solution}

Feedback:
{feedback}

Problem:
{problem}

Write an improved solution that fixes what the feedback found wrong."""

ROUNDS_SCORE = "refine_rounds"


class RefineParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(default=2, ge=1, le=16, description="Most feedback-and-rewrite rounds per chain.")
    max_tokens: int = Field(default=256, ge=1, description="Tokens per answer (the first, without inputs, and each rewrite).")
    feedback_max_tokens: int = Field(default=128, ge=1, description="Tokens per feedback.")
    temperature: float = Field(default=0.0, ge=0.0, le=5.0, description="For answers and feedback; 0 means greedy.")
    stop_when_correct: bool = Field(
        default=True, description='Stop a chain when its feedback ends with "Verdict: Yes".'
    )


async def feedback_on(ctx: Context, candidate: Candidate, params: RefineParams) -> str:
    prompt = FEEDBACK_PROMPT.format(problem=ctx.problem.prompt, solution=clip(candidate.text) or "(empty)")
    return (await ctx.ask(prompt, max_tokens=params.feedback_max_tokens, temperature=params.temperature)).strip()


async def refine_chain(ctx: Context, start: Candidate, params: RefineParams) -> Candidate:
    """Feedback and rewrite `start` for up to `rounds` rounds; the last answer of the chain."""
    current, rewrites = start, 0
    for _ in range(params.rounds):
        feedback = await feedback_on(ctx, current, params)
        if params.stop_when_correct and written_verdict(feedback) is True:
            current = current.model_copy(update={"critiques": {**current.critiques, current.id: feedback}})
            break
        prompt = REFINE_PROMPT.format(
            solution=clip(current.text) or "(empty)", feedback=clip(feedback) or "(none)", problem=ctx.problem.prompt
        )
        (rewrite,) = await ctx.sample(
            n=1,
            messages=(Message(role="user", content=prompt),),
            parents=(current.id,),
            temperature=params.temperature,
            max_tokens=params.max_tokens,
        )
        current = rewrite.model_copy(update={"critiques": {current.id: feedback}})
        rewrites += 1
    return current.with_score(ROUNDS_SCORE, rewrites)


@technique("refine", RefineParams, min_inputs=0)
async def refine(ctx: Context, inputs: list[Candidate], params: RefineParams) -> list[Candidate]:
    """Self-Refine each input (or one fresh answer): feedback then rewrite, until the feedback says correct."""
    starts = inputs or await ctx.sample(n=1, temperature=params.temperature, max_tokens=params.max_tokens)
    return list(await asyncio.gather(*(refine_chain(ctx, c, params) for c in starts)))
