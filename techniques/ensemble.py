"""Ensemble (Archon's ensemble layer): the same sampling from several models at once."""

from __future__ import annotations

import asyncio

from pydantic import Field

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.technique import ModelAliases, technique
from orchestra.techniques.sample import SampleParams


class EnsembleParams(SampleParams):
    models: ModelAliases = Field(default_factory=list)


@technique("ensemble", EnsembleParams, min_inputs=0, needs_model=False)
async def ensemble(ctx: Context, inputs: list[Candidate], params: EnsembleParams) -> list[Candidate]:
    """Draw n answers from each of several models (Archon's ensemble layer), concurrently.

    Candidates come grouped by model, in the order `models` lists them (default:
    the recipe's models in definition order); each carries its model's alias.
    """
    aliases = params.models or list(ctx.models)
    pools = await asyncio.gather(*(ctx.sample(model=alias, **params.sample_settings()) for alias in aliases))
    return [candidate for pool in pools for candidate in pool]
