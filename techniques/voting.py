"""Self-consistency: the answer most candidates agree on."""

from __future__ import annotations

from collections import defaultdict

from pydantic import BaseModel, ConfigDict

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.scorer import ScorerName, apply_scorer
from orchestra.technique import technique


class VoteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight_by: ScorerName | None = None  # a scorer name; None counts each vote once


@technique("majority_vote", VoteParams, needs_model=False)
async def majority_vote(ctx: Context, inputs: list[Candidate], params: VoteParams) -> list[Candidate]:
    """Group candidates by normalized answer and return one per answer, most votes first.

    Candidates without an extractable answer do not vote. Ties go to the answer
    seen first. Each returned candidate is the first voter for its answer, with
    `parents` naming every voter and `scores["votes"]` the (weighted) vote share.
    """
    if params.weight_by:
        inputs = await apply_scorer(ctx, params.weight_by, inputs)
    normalize = ctx.task.normalize if ctx.task else (lambda a: a)
    groups: dict[str, list[Candidate]] = defaultdict(list)
    weights: dict[str, float] = defaultdict(float)
    for candidate in inputs:
        key = normalize(candidate.answer) if candidate.answer is not None else None
        if key is None:
            continue
        groups[key].append(candidate)
        weights[key] += candidate.scores[params.weight_by] if params.weight_by else 1.0
    total = sum(weights.values()) or 1.0
    ranked = sorted(groups, key=lambda k: -weights[k])  # stable: ties keep first-seen order
    return [
        Candidate(
            text=groups[key][0].text,
            node=ctx.node,
            parents=tuple(c.id for c in groups[key]),
            model=groups[key][0].model,
            answer=groups[key][0].answer,
            scores={**groups[key][0].scores, "votes": weights[key] / total},
        )
        for key in ranked
    ]
