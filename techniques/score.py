"""The `score` technique: apply any scorer to a pool, which passes through scored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.scorer import ScorerName, apply_scorer
from orchestra.technique import technique


class ScoreParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scorer: ScorerName = "task"


@technique("score", ScoreParams, needs_model=False)
async def score(ctx: Context, inputs: list[Candidate], params: ScoreParams) -> list[Candidate]:
    """Rate every input candidate with a scorer; the pool passes through, scored."""
    return await apply_scorer(ctx, params.scorer, inputs)
