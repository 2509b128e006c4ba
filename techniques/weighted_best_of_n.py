"""Weighted best-of-N: the answer with the most total score, between best-of-N and a vote."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.scorer import ScorerName, apply_scorer
from orchestra.technique import technique
from orchestra.techniques._voting import tally


class WeightedBestOfNParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scorer: ScorerName = Field(description="Scorer with non-negative scores, e.g. a verifier's probability.")
    ignore_arguments: list[str] = Field(
        default_factory=list, description="Tool-call arguments that do not count when comparing tool calls."
    )


@technique("weighted_best_of_n", WeightedBestOfNParams, needs_model=False)
async def weighted_best_of_n(
    ctx: Context, inputs: list[Candidate], params: WeightedBestOfNParams
) -> list[Candidate]:
    """Pick the answer whose candidates' scores sum highest, one candidate per answer, best first.

    Unlike best_of_n, an answer many middling candidates reach can beat one lucky
    high score; unlike majority_vote, confident candidates count more. Each
    answer is represented by its highest-scored candidate; `scores["votes"]` is
    its share of the total score.
    """
    scored = await apply_scorer(ctx, params.scorer, inputs)
    return tally(ctx, scored, params.scorer, representative="best", ignore_arguments=params.ignore_arguments)
