"""Usage: what a model call (or a node, a problem, a run) spent."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

USAGE_FIELDS = (
    "calls",
    "prompt_tokens",
    "cached_prompt_tokens",
    "completion_tokens",
    "flops",
    "seconds",
)


class Usage(BaseModel):
    """Additive counters of compute spent.

    Costs are logical: a generation replayed from the cache counts the prompt
    and completion tokens it would have cost, and `flops` is always 2 x
    parameters x (prompt + completion tokens) of the call (the prompt once for n
    samples, which share one prefill), so budgets and reported costs do not
    depend on what happened to be cached. Three counters are physical instead:
    `cache_hits` (samples replayed from the generation cache),
    `cached_prompt_tokens` (prompt tokens the backend really skipped because
    another request in its batch had the same prompt) and `seconds` (wall time).
    `estimated_calls` counts calls whose token counts a remote server did not
    report, so orchestra estimated them with a tokenizer.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    calls: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    flops: float = 0.0
    seconds: float = 0.0
    cache_hits: int = 0
    estimated_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            **{name: getattr(self, name) + getattr(other, name) for name in Usage.model_fields}
        )

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            **{name: getattr(self, name) - getattr(other, name) for name in Usage.model_fields}
        )
