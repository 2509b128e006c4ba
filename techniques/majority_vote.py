"""Self-consistency: the answer most candidates agree on."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.scorer import ScorerName, apply_scorer
from orchestra.technique import technique
from orchestra.techniques._voting import tally


class VoteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight_by: ScorerName | None = Field(
        default=None, description="Scorer whose (non-negative) scores weight the votes; none counts each once."
    )
    ignore_arguments: list[str] = Field(
        default_factory=list, description="Tool-call arguments that do not count when comparing tool calls."
    )


@technique("majority_vote", VoteParams, needs_model=False)
async def majority_vote(ctx: Context, inputs: list[Candidate], params: VoteParams) -> list[Candidate]:
    """Group candidates by normalized answer and return one per answer, most votes first.

    Tool calls agree when they call the same function with equal arguments (less
    `ignore_arguments`). Candidates without an extractable answer do not vote. Ties go to the answer
    seen first. Each returned candidate is the first voter for its answer, with
    `parents` naming every voter and `scores["votes"]` the (weighted) vote share.
    """
    if params.weight_by:
        inputs = await apply_scorer(ctx, params.weight_by, inputs)
    return tally(ctx, inputs, params.weight_by, ignore_arguments=params.ignore_arguments)
