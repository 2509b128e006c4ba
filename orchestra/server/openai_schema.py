"""The slice of OpenAI's chat API that `orchestra serve` speaks: requests in, errors out.

Requests are parsed leniently where clients differ (unknown fields such as
`temperature` are accepted and left to the recipe, which owns its sampling)
and strictly where a mistake would change the answer (roles, content types,
`n`, token limits). Every refusal is an `OpenAIError`, rendered in OpenAI's
error shape so every client library raises its usual exception.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestra.problem import Message
from orchestra.structured_output import check_response_format
from orchestra.tool_calls import ToolCall


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
    """A turn: text, an assistant's `tool_calls` (content may then be null), or a `tool` result."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _has_content(self) -> ChatMessage:
        if self.content is None and not self.tool_calls:
            raise ValueError("content is required (it may be null only on an assistant turn with tool_calls)")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant turns make tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool turn names the call it answers: tool_call_id")
        return self

    def to_message(self) -> Message:
        if self.content is None:
            text = ""
        elif isinstance(self.content, str):
            text = self.content
        else:
            kinds = sorted({part.type for part in self.content if part.type != "text"})
            if kinds:
                raise OpenAIError(400, f"only text content is supported, not {', '.join(kinds)}", param="messages")
            text = "".join(part.text or "" for part in self.content)
        role = "system" if self.role == "developer" else self.role
        return Message(
            role=role,
            content=text,
            tool_calls=tuple(self.tool_calls) if self.tool_calls else None,
            tool_call_id=self.tool_call_id if self.role == "tool" else None,
        )


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["function"]
    function: FunctionDefinition


class _ChosenFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: _ChosenFunction


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
    #: OpenAI tool definitions and tool_choice, handed to the recipe's sampling nodes.
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    #: {type: json_object} or {type: json_schema, json_schema: {name, schema, strict}}.
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _known_format(cls, value: Any) -> Any:
        return check_response_format(value)

    @model_validator(mode="after")
    def _choice_names_a_tool(self) -> ChatRequest:
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {t.function.name for t in self.tools or ()}
            if self.tool_choice.function.name not in names:
                raise ValueError(f"tool_choice names {self.tool_choice.function.name!r}, which is not among the tools")
        return self

    def wire(self, name: str) -> Any:
        """`tools`, `tool_choice` or `response_format` as plain JSON (None when not given)."""
        value = getattr(self, name)
        if isinstance(value, list):
            return tuple(item.model_dump(exclude_none=True) for item in value)
        return value.model_dump(exclude_none=True) if isinstance(value, BaseModel) else value

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
