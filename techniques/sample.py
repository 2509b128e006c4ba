"""Sampling: n independent answers to the problem from its own messages.

Its params are the sampling settings every generator shares; `ensemble` and
`repeated_sampling` extend them.
"""

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

    def sample_settings(self, **override) -> dict:
        """The sampling fields as `Context.sample` keywords, with `override` applied."""
        settings = {
            "n": self.n,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_tokens": self.max_tokens,
            "stop": tuple(self.stop),
        }
        return {**settings, **override}


@technique("sample", SampleParams, min_inputs=0, scales_samples=True)
async def sample(ctx: Context, inputs: list[Candidate], params: SampleParams) -> list[Candidate]:
    """Draw n independent answers to the problem (n=1, temperature=0 is greedy decoding)."""
    return await ctx.sample(**params.sample_settings())
