"""A candidate answer flowing along the recipe DAG, with its provenance."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field


def new_candidate_id() -> str:
    """Short random ids: unique within a run, readable in traces."""
    return uuid.uuid4().hex[:12]


class Candidate(BaseModel):
    """An answer produced by a node.

    Candidates are immutable: a technique that scores or rewrites one makes a
    copy (`with_score`, `model_copy`). Provenance is explicit: `parents` holds the
    ids of the candidates this one was made from, and `critiques` are keyed by
    candidate id, never by list position.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=new_candidate_id)
    text: str
    node: str = ""
    parents: tuple[str, ...] = ()
    model: str | None = None
    answer: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    logprobs: tuple[float, ...] | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    critiques: dict[str, str] = Field(default_factory=dict)

    def with_score(self, name: str, value: float) -> Candidate:
        """A copy with one more score; the id stays, since the text is the same."""
        return self.model_copy(update={"scores": {**self.scores, name: float(value)}})
