"""Best-of-N: score every candidate and keep the best."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.scorer import ScorerName, apply_scorer
from orchestra.technique import technique


class BestOfNParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scorer: ScorerName = Field(default="mean_logprob", description="Scorer that ranks the candidates.")
    keep: int = Field(default=1, ge=1, description="How many of the best to pass on.")


@technique("best_of_n", BestOfNParams, needs_model=False)
async def best_of_n(ctx: Context, inputs: list[Candidate], params: BestOfNParams) -> list[Candidate]:
    """Score every candidate and keep the `keep` highest (ties: earlier candidate first)."""
    scored = await apply_scorer(ctx, params.scorer, inputs)
    return sorted(scored, key=lambda c: -c.scores[params.scorer])[: params.keep]
