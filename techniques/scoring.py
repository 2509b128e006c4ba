"""Built-in scorers and the `score` technique that applies any scorer to a pool."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict

from orchestra.backends import LOGPROBS
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.scorer import ScorerName, apply_scorer, scorer
from orchestra.technique import technique


@scorer("task", oracle=True)
async def task_score(ctx: Context, candidate: Candidate) -> float:
    """Ground truth: the task's own scorer against the reference answer."""
    if ctx.task is None:
        raise ValueError("the `task` scorer needs a task to score against")
    # off the event loop: a task's scorer may execute code (HumanEval)
    return await asyncio.to_thread(ctx.task.score, ctx.problem, candidate.text, candidate.answer)


@scorer("mean_logprob", requires=(LOGPROBS,))
async def mean_logprob(ctx: Context, candidate: Candidate) -> float:
    """Self-certainty: the mean token log-probability the generator gave its own answer."""
    if not candidate.logprobs:
        raise ValueError(f"candidate {candidate.id} has no logprobs to score")
    return sum(candidate.logprobs) / len(candidate.logprobs)


class ScoreParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scorer: ScorerName = "task"


@technique("score", ScoreParams, needs_model=False)
async def score(ctx: Context, inputs: list[Candidate], params: ScoreParams) -> list[Candidate]:
    """Rate every input candidate with a scorer; the pool passes through, scored."""
    return await apply_scorer(ctx, params.scorer, inputs)
