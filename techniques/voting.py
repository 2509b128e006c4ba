"""Self-consistency: the answer most candidates agree on, fixed-size or adaptive."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.scorer import ScorerName, apply_scorer
from orchestra.technique import technique


def tally(
    ctx: Context,
    candidates: list[Candidate],
    weight_by: str | None = None,
    representative: Literal["first", "best"] = "first",
) -> list[Candidate]:
    """Group candidates by normalized answer; one candidate per answer, heaviest first.

    A group weighs its number of members, or the sum of their `weight_by` scores
    (which must be non-negative: a log-probability would make more votes count
    less). Candidates without an extractable answer do not vote. Ties go to the
    answer seen first. The group's representative is its first member, or its
    highest-scored one (`best`); it comes back with `parents` naming every member
    and `scores["votes"]` its group's share of the total weight.
    """
    normalize = ctx.task.normalize if ctx.task else (lambda a: a)
    groups: dict[str, list[Candidate]] = defaultdict(list)
    weights: dict[str, float] = defaultdict(float)
    for candidate in candidates:
        key = normalize(candidate.answer) if candidate.answer is not None else None
        if key is None:
            continue
        weight = candidate.scores[weight_by] if weight_by else 1.0
        if weight < 0:
            raise ValueError(
                f"voting weights must be non-negative; scorer {weight_by!r} gave {weight:.3g} "
                "(weight by a probability-like scorer, not a log-probability)"
            )
        groups[key].append(candidate)
        weights[key] += weight
    total = sum(weights.values()) or 1.0
    ranked = sorted(groups, key=lambda k: -weights[k])  # stable: ties keep first-seen order
    out = []
    for key in ranked:
        members = groups[key]
        head = members[0]
        if representative == "best" and weight_by:
            head = max(members, key=lambda c: c.scores[weight_by])  # max keeps the first of ties
        out.append(
            Candidate(
                text=head.text,
                node=ctx.node,
                parents=tuple(c.id for c in members),
                model=head.model,
                answer=head.answer,
                scores={**head.scores, "votes": weights[key] / total},
                critiques=head.critiques,
            )
        )
    return out


class VoteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight_by: ScorerName | None = Field(
        default=None, description="Scorer whose (non-negative) scores weight the votes; none counts each once."
    )


@technique("majority_vote", VoteParams, needs_model=False)
async def majority_vote(ctx: Context, inputs: list[Candidate], params: VoteParams) -> list[Candidate]:
    """Group candidates by normalized answer and return one per answer, most votes first.

    Candidates without an extractable answer do not vote. Ties go to the answer
    seen first. Each returned candidate is the first voter for its answer, with
    `parents` naming every voter and `scores["votes"]` the (weighted) vote share.
    """
    if params.weight_by:
        inputs = await apply_scorer(ctx, params.weight_by, inputs)
    return tally(ctx, inputs, params.weight_by)


class AdaptiveVoteParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["beta", "agreement"] = Field(
        default="beta",
        description="beta: stop when P(leader beats runner-up) under a Beta posterior reaches "
        "`confidence`; agreement: stop when the leader's share of votes reaches `agreement`.",
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="For method beta.")
    agreement: float = Field(default=0.7, gt=0.0, le=1.0, description="For method agreement.")
    min_samples: int = Field(default=2, ge=1, description="Never stop before this many samples.")
    max_samples: int = Field(default=16, ge=1, description="Always stop at this many samples.")
    batch: int = Field(default=2, ge=1, description="Samples drawn per round.")
    temperature: float = Field(default=0.7, ge=0.0, le=5.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)
    max_tokens: int = Field(default=256, ge=1)
    stop: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _bounds(self) -> AdaptiveVoteParams:
        if self.min_samples > self.max_samples:
            raise ValueError(f"min_samples ({self.min_samples}) exceeds max_samples ({self.max_samples})")
        return self


def leader_beats_runner_up(leader: int, runner_up: int) -> float:
    """P(p > 1/2) for p ~ Beta(leader + 1, runner_up + 1), exactly.

    This is the stopping rule of Adaptive-Consistency (Aggarwal et al., 2023),
    restricted to the two leading answers: with a uniform prior on the share p of
    the leader among the two, how sure are we that the leader is the true
    majority? For integer parameters the Beta tail is a binomial sum:
    P(p > 1/2) = sum_{j < a} C(m, j) / 2^m, with a = leader + 1, m = leader + runner_up + 1.
    """
    a, m = leader + 1, leader + runner_up + 1
    return sum(math.comb(m, j) for j in range(a)) / 2**m


@technique("adaptive_vote", AdaptiveVoteParams, min_inputs=0)
async def adaptive_vote(ctx: Context, inputs: list[Candidate], params: AdaptiveVoteParams) -> list[Candidate]:
    """Sample in rounds and stop as soon as the leading answer is confident (Adaptive-Consistency).

    Saves samples on easy problems (the first few agree) and spends up to
    `max_samples` on hard ones. Output as `majority_vote`, with `scores["samples"]`
    the number of samples drawn and `scores["confidence"]` the stopping statistic.
    Sample indices continue across rounds, so the pool is that of a `sample` node
    with the same settings and the generation cache serves either.
    """
    drawn: list[Candidate] = []
    confidence = 0.0
    while len(drawn) < params.max_samples:
        count = min(params.batch, params.max_samples - len(drawn))
        drawn.extend(
            await ctx.sample(
                n=count,
                first_index=len(drawn),
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,
                max_tokens=params.max_tokens,
                stop=tuple(params.stop),
            )
        )
        votes = tally(ctx, drawn)
        counts = [len(group.parents) for group in votes] + [0, 0]
        if params.method == "beta":
            confidence = leader_beats_runner_up(counts[0], counts[1])
            confident = confidence >= params.confidence
        else:
            confidence = counts[0] / len(drawn)
            confident = confidence >= params.agreement
        if confident and len(drawn) >= params.min_samples:
            break
    return [
        c.model_copy(update={"scores": {**c.scores, "samples": float(len(drawn)), "confidence": confidence}})
        for c in tally(ctx, drawn)
    ]
