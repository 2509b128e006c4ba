"""The slice of OpenAI's chat API that `orchestra serve` speaks: requests in, errors out.

Requests are parsed leniently where clients differ (unknown fields such as
`temperature` are accepted and left to the recipe, which owns its sampling)
and strictly where a mistake would change the answer (roles, content types,
`n`, token limits). Every refusal is an `OpenAIError`, rendered in OpenAI's
error shape so every client library raises its usual exception.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestra.problem import Message


class OpenAIError(Exception):
    """An error answered as {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None

    def to_message(self) -> Message:
        if isinstance(self.content, str):
            text = self.content
        else:
            kinds = sorted({part.type for part in self.content if part.type != "text"})
            if kinds:
                raise OpenAIError(400, f"only text content is supported, not {', '.join(kinds)}", param="messages")
            text = "".join(part.text or "" for part in self.content)
        role = "system" if self.role == "developer" else self.role
        return Message(role=role, content=text)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """POST /v1/chat/completions. Sampling fields (temperature, top_p, ...) are accepted and
    ignored: the served recipe decides how it samples."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None

    @property
    def token_cap(self) -> int | None:
        """The client's limit on completion tokens (all of the recipe's calls together)."""
        return self.max_completion_tokens or self.max_tokens


def parse_chat_request(data: Any) -> ChatRequest:
    """A validated request, or an OpenAIError naming the first bad field."""
    if not isinstance(data, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        message = f"{param}: {first['msg']}" if param else first["msg"]
        if len(err.errors()) > 1:
            message += f" (and {len(err.errors()) - 1} more problem(s))"
        raise OpenAIError(400, message, param=param) from None
