"""Repeated sampling (Large Language Monkeys): sample until a verifier accepts an answer."""

from __future__ import annotations

from pydantic import Field

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.scorer import ScorerName, apply_scorer
from orchestra.technique import technique
from orchestra.techniques.sample import SampleParams


class RepeatedSamplingParams(SampleParams):
    n: int = Field(default=16, ge=1, le=4096, description="Most samples to draw.")
    batch: int = Field(default=4, ge=1, description="Samples drawn per round before verifying.")
    verifier: ScorerName = Field(description="Scorer that accepts or rejects a sample.")
    threshold: float = Field(default=0.5, description="A sample is accepted when its score is at least this.")


@technique("repeated_sampling", RepeatedSamplingParams, min_inputs=0)
async def repeated_sampling(
    ctx: Context, inputs: list[Candidate], params: RepeatedSamplingParams
) -> list[Candidate]:
    """Sample in rounds until a verifier accepts one (Large Language Monkeys), at most n samples.

    Returns every sample drawn with the first accepted one in front, so a
    downstream node or the run's output takes it; when none is accepted, the
    samples best first by the verifier's score. Rounds draw sample indices
    batch-by-batch, so the samples are those of a single `sample` node with the
    same n: the generation cache serves either.
    """
    drawn: list[Candidate] = []
    while len(drawn) < params.n:
        count = min(params.batch, params.n - len(drawn))
        fresh = await ctx.sample(first_index=len(drawn), **params.sample_settings(n=count))
        fresh = await apply_scorer(ctx, params.verifier, fresh)
        drawn.extend(fresh)
        accepted = next((c for c in fresh if c.scores[params.verifier] >= params.threshold), None)
        if accepted is not None:
            return [accepted, *(c for c in drawn if c.id != accepted.id)]
    return sorted(drawn, key=lambda c: -c.scores[params.verifier])
