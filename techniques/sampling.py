"""Generation from the problem's messages."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.technique import technique


class SampleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(default=1, ge=1, le=4096, description="Samples to draw.")
    temperature: float = Field(default=0.7, ge=0.0, le=5.0, description="0 means greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, description="0 means no top-k cut.")
    max_tokens: int = Field(default=256, ge=1)
    stop: list[str] = Field(default_factory=list)


@technique("sample", SampleParams, min_inputs=0)
async def sample(ctx: Context, inputs: list[Candidate], params: SampleParams) -> list[Candidate]:
    """Draw n independent answers to the problem (n=1, temperature=0 is greedy decoding)."""
    return await ctx.sample(
        n=params.n,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        max_tokens=params.max_tokens,
        stop=tuple(params.stop),
    )
