"""Adaptive-Consistency (Aggarwal et al., 2023): sample in rounds, stop once the vote is decided."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.technique import technique
from orchestra.techniques.sample import SamplingSettings
from orchestra.techniques._voting import tally


class AdaptiveVoteParams(SamplingSettings):
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
                **params.sampling(),
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
