"""A problem: what a task asks, and what its scorer needs to judge an answer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    """One chat turn, in the shape every chat API and chat template understands."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class Problem(BaseModel):
    """One item of a task.

    `messages` is what the model sees; `answer`, `tests` and `metadata` are what
    the task's scorer sees. Techniques may read the messages but must never peek
    at the reference answer (only scorers that declare themselves oracles do).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    messages: tuple[Message, ...]
    answer: str | None = None
    tests: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_prompt(cls, id: str, prompt: str, **fields: Any) -> Problem:
        """A single-turn problem from a plain prompt string."""
        return cls(id=id, messages=(Message(role="user", content=prompt),), **fields)

    @property
    def prompt(self) -> str:
        """The last user turn: what most prompts of techniques quote back to the model."""
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users else ""
