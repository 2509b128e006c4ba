"""Sampling: n independent answers to the problem from its own messages.

`SamplingSettings` are the sampling fields every generator shares (`allocate`,
`adaptive_vote` and `deepconf` extend them); `SampleParams` adds the number of
samples, and `ensemble` and `repeated_sampling` extend it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestra.backends import ThinkingBudget
from orchestra.candidate import Candidate
from orchestra.context import Context
from orchestra.structured_output import check_response_format
from orchestra.technique import technique


class SamplingSettings(BaseModel):
    """How each sample is drawn, whatever decides how many are."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=0.7, ge=0.0, le=5.0, description="0 means greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, description="Sampling's top-k cut; 0 means none.")
    max_tokens: int = Field(default=256, ge=1)
    stop: list[str] = Field(default_factory=list)
    thinking: ThinkingBudget | None = Field(
        default=None, description="Bounds on a thinking model's <think> span: max_tokens, min_tokens (budget forcing)."
    )
    response_format: dict[str, Any] | None = Field(
        default=None,
        description="OpenAI response_format ({type: json_object} or {type: json_schema, json_schema: {name, schema}}); "
        "unset: the problem's (a served request's).",
    )
    tool_choice: str | dict[str, Any] | None = Field(
        default=None, description="OpenAI tool_choice for the problem's tools; unset: the problem's."
    )

    @field_validator("response_format")
    @classmethod
    def _known_format(cls, value: Any) -> Any:
        return check_response_format(value)

    def sampling(self) -> dict:
        """These fields as `Context.sample` / `GenerationRequest` keywords."""
        settings = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_tokens": self.max_tokens,
            "stop": tuple(self.stop),
            "response_format": self.response_format,
            "tool_choice": self.tool_choice,
        }
        if self.thinking is not None:
            settings["thinking"] = self.thinking
        return settings


class SampleParams(SamplingSettings):
    n: int = Field(default=1, ge=1, le=4096, description="Samples to draw.")

    def sample_settings(self, **override) -> dict:
        """The sampling fields and `n` as `Context.sample` keywords, with `override` applied."""
        return {"n": self.n, **self.sampling(), **override}


@technique("sample", SampleParams, min_inputs=0, scales_samples=True)
async def sample(ctx: Context, inputs: list[Candidate], params: SampleParams) -> list[Candidate]:
    """Draw n independent answers to the problem (n=1, temperature=0 is greedy decoding)."""
    return await ctx.sample(**params.sample_settings())
