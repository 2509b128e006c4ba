"""The `task` scorer: ground truth, the task's own scorer against the reference answer (an oracle)."""

from __future__ import annotations

import asyncio

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.scorer import scorer


@scorer("task", oracle=True)
async def task_score(ctx: Context, candidate: Candidate) -> float:
    """Ground truth: the task's own scorer against the reference answer."""
    if ctx.task is None:
        raise ValueError("the `task` scorer needs a task to score against")
    # off the event loop: a task's scorer may execute code (HumanEval)
    return await asyncio.to_thread(ctx.task.score, ctx.problem, candidate.text, candidate.answer)
