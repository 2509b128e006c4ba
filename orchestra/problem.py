"""A problem: what a task asks, and what its scorer needs to judge an answer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from orchestra.tool_calls import ToolCall


class Message(BaseModel):
    """One chat turn, in the shape every chat API and chat template understands.

    An assistant turn may carry the `tool_calls` it made, and a `tool` turn answers
    one of them (`tool_call_id`). Fields left unset are left out of dumps, so plain
    turns read (and key caches) exactly as before tools existed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] | None = None
    tool_call_id: str | None = None

    @model_serializer(mode="wrap")
    def _unset_left_out(self, handler):
        return {k: v for k, v in handler(self).items() if v is not None or k == "content"}


class Problem(BaseModel):
    """One item of a task.

    `messages` is what the model sees, with the `tools` it may call (OpenAI tool
    definitions), the `tool_choice` and the `response_format` a client asked for
    (nodes sample with them unless they set their own); `answer`, `tests` and
    `metadata` are what the task's scorer sees. Techniques may read the messages but must never peek
    at the reference answer (only scorers that declare themselves oracles do).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    messages: tuple[Message, ...]
    answer: str | None = None
    tests: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    @classmethod
    def from_prompt(cls, id: str, prompt: str, **fields: Any) -> Problem:
        """A single-turn problem from a plain prompt string."""
        return cls(id=id, messages=(Message(role="user", content=prompt),), **fields)

    @property
    def prompt(self) -> str:
        """The last user turn: what most prompts of techniques quote back to the model."""
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users else ""
