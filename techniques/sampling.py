"""Generation from the problem's messages: one model, several models, or until a verifier accepts."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.scorer import ScorerName, apply_scorer
from orchestra.technique import ModelAliases, technique


class SampleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=1, ge=1, le=4096, description="Samples to draw.")
    temperature: float = Field(default=0.7, ge=0.0, le=5.0, description="0 means greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, description="0 means no top-k cut.")
    max_tokens: int = Field(default=256, ge=1)
    stop: list[str] = Field(default_factory=list)


@technique("sample", SampleParams, min_inputs=0, scales_samples=True)
async def sample(ctx: Context, inputs: list[Candidate], params: SampleParams) -> list[Candidate]:
    """Draw n independent answers to the problem (n=1, temperature=0 is greedy decoding)."""
    return await ctx.sample(**_settings(params))


class EnsembleParams(SampleParams):
    models: ModelAliases = Field(default_factory=list)


@technique("ensemble", EnsembleParams, min_inputs=0, needs_model=False)
async def ensemble(ctx: Context, inputs: list[Candidate], params: EnsembleParams) -> list[Candidate]:
    """Draw n answers from each of several models (Archon's ensemble layer), concurrently.

    Candidates come grouped by model, in the order `models` lists them (default:
    the recipe's models in definition order); each carries its model's alias.
    """
    aliases = params.models or list(ctx.models)
    pools = await asyncio.gather(*(ctx.sample(model=alias, **_settings(params)) for alias in aliases))
    return [candidate for pool in pools for candidate in pool]


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
        fresh = await ctx.sample(first_index=len(drawn), **_settings(params, n=count))
        fresh = await apply_scorer(ctx, params.verifier, fresh)
        drawn.extend(fresh)
        accepted = next((c for c in fresh if c.scores[params.verifier] >= params.threshold), None)
        if accepted is not None:
            return [accepted, *(c for c in drawn if c.id != accepted.id)]
    return sorted(drawn, key=lambda c: -c.scores[params.verifier])


def _settings(params: SampleParams, **override) -> dict:
    """The sampling fields of `params` as `Context.sample` keywords."""
    settings = {
        "n": params.n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "max_tokens": params.max_tokens,
        "stop": tuple(params.stop),
    }
    return {**settings, **override}
