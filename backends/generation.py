"""What a model call asks for and gets back: the request, its samples, the call's result.

These are the only types that cross between techniques and backends; they say
nothing about how a backend generates, so every backend (local engine, vLLM,
OpenAI-compatible servers, plugins) takes and returns the same ones.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from orchestra.problem import Message
from orchestra.usage import Usage

#: Capabilities a technique may require of its model's backend.
#: LOGPROBS: the sampled tokens' logprobs (`logprobs`) and each position's most likely
#: tokens (`top_logprobs`). CONTINUATION: a raw `prompt` prefix, or `messages` ending with
#: an assistant turn, is continued as is. CONFIDENCE_STOP: `confidence_stop` ends a sample
#: mid-decode when its confidence falls (backends without it ignore the field).
LOGPROBS = "logprobs"
CONTINUATION = "continuation"
HIDDEN_STATES = "hidden_states"
CONFIDENCE_STOP = "confidence_stop"


class ConfidenceStop(BaseModel):
    """End a sample as soon as the model grows unsure of it (DeepConf's online early stop).

    A token's confidence is minus the mean of the `top_k` largest log-probabilities
    of the model's raw distribution at its position: high where the distribution is
    peaked. Once `window` tokens are generated, the sample finishes with
    finish_reason "confidence" at the first token where the mean confidence of the
    last `window` tokens is below `threshold`. EOS, stop strings and the token limit
    are checked first: a sample that ends on its own at that token ends as usual.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float
    window: int = Field(default=16, ge=1)
    top_k: int = Field(default=5, ge=1, le=20)


class ThinkingBudget(BaseModel):
    """Bounds on the thinking of a model that thinks in tags (`<think>…</think>`).

    The thinking span runs from the start of the reply to `end`. `max_tokens`:
    once the span holds that many tokens, `close` (default: `end`) is written for
    the model and it goes on to answer (vLLM's `thinking_token_budget`).
    `min_tokens`: an end of the span before that many tokens (`end`, or EOS) is
    replaced by `wait` and decoding continues (budget forcing, s1). `end: null`
    makes the whole reply the span, for a model without tags (then a maximum
    without `close` ends the reply). The local backend applies both bounds; an
    OpenAI-compatible server gets the maximum as `thinking_token_budget` (vLLM)
    and cannot force a minimum.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int | None = Field(default=None, ge=0)
    min_tokens: int = Field(default=0, ge=0)
    end: str | None = "</think>"
    close: str | None = None
    wait: str = Field(default="Wait", min_length=1)

    @model_validator(mode="after")
    def _bounds(self) -> ThinkingBudget:
        if self.max_tokens is None and not self.min_tokens:
            raise ValueError("a thinking budget needs max_tokens, min_tokens or both")
        if self.max_tokens is not None and self.max_tokens < self.min_tokens:
            raise ValueError(f"thinking max_tokens ({self.max_tokens}) is below min_tokens ({self.min_tokens})")
        if self.end == "" or self.close == "":
            raise ValueError("thinking `end` and `close` must not be empty (null: the end of the reply)")
        return self

    def server_budget(self, where: str) -> int:
        """The maximum, for a server that bounds thinking itself (vLLM's `thinking_token_budget`,
        with the tags of its reasoning parser). What only the local engine can do is refused."""
        if self.min_tokens:
            raise ValueError(f"{where}: a thinking min_tokens (budget forcing) needs the local backend")
        if self.max_tokens is None or self.end != "</think>" or self.close is not None:
            raise ValueError(
                f"{where}: a server is sent only a thinking max_tokens, closed with its own </think> "
                "(no `end` or `close` of your own)"
            )
        return self.max_tokens


class GenerationRequest(BaseModel):
    """A batched generation request: `n` samples of one prompt.

    Either `messages` (rendered with the model's chat template) or `prompt` (a
    raw prefix to continue, e.g. a partial answer) is given. Sample `i` of a
    request with a seed is drawn from a generator seeded by `(seed, first_index
    + i)`, so any sample can be regenerated alone and a larger pool extends a
    smaller one instead of replacing it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    n: int = Field(default=1, ge=1)
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    first_index: int = Field(default=0, ge=0)
    logprobs: bool = False
    #: For each generated position, return this many most likely next tokens with their
    #: log-probabilities under the model's raw distribution (before temperature, top-k
    #: and top-p), as `Completion.top_logprobs`. How a verifier reads P("Yes") at a
    #: verdict position without sampling it. 0: none.
    top_logprobs: int = Field(default=0, ge=0, le=20)
    #: Also return, per generated token, the final-layer hidden state that predicted it
    #: (backends with the HIDDEN_STATES capability), e.g. for probes and value heads.
    hidden_states: bool = False
    #: The token ids of the final assistant turn's text, for backends that continue
    #: token-exactly (local): they feed the prompt up to that turn and then these ids, so a
    #: partial answer grown step by step is continued as generated (and its KV found in the
    #: prefix cache) even where its text would re-tokenize differently. Backends without
    #: token ids continue from the turn's text; `messages` must end with an assistant turn.
    continuation_ids: tuple[int, ...] | None = None
    #: Stop a sample early when its sliding-window confidence falls below a threshold
    #: (backends with the CONFIDENCE_STOP capability; others generate it whole).
    confidence_stop: ConfidenceStop | None = None
    #: Bounds on the thinking span of a model that thinks in tags (see `ThinkingBudget`).
    thinking: ThinkingBudget | None = None
    #: OpenAI tool definitions the model may call, and OpenAI's `tool_choice` ("auto", "none",
    #: "required" or {"type": "function", "function": {"name": ...}}). Calls come back in the
    #: completion's text as `<tool_call>` blocks (see `orchestra.tool_calls`).
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: str | dict[str, Any] | None = None
    #: OpenAI's `response_format` (`json_object` or `json_schema`): remote backends pass it on,
    #: the local engine enforces it by constrained decoding (see `orchestra.structured_output`).
    response_format: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerationRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` or `prompt`")
        if self.continuation_ids is not None and not (self.messages and self.messages[-1].role == "assistant"):
            raise ValueError("`continuation_ids` continue an assistant turn: `messages` must end with one")
        return self

    def sample_seed(self, offset: int = 0) -> int | None:
        """One 31-bit integer seed for sample `first_index + offset`, for engines that take a
        single seed per call (vLLM, OpenAI-compatible servers). A call for samples k.. uses the
        seed of sample k, so a call that extends a pool never repeats the samples before it."""
        if self.seed is None:
            return None
        digest = hashlib.sha256(f"{self.seed}:{self.first_index + offset}".encode()).digest()
        return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF

    def sampling_key(self) -> dict:
        """The fields that change what a sample is (everything but n and first_index).

        `top_logprobs`, `confidence_stop`, `thinking`, `continuation_ids`, `tools`, `tool_choice`
        and `response_format` are part of the key only
        when given, so cached samples stored with them are found by requests that need them,
        and keys of other requests stay what they were before the fields existed. The
        continuation's token ids are keyed besides the rendered text: two partial answers
        that spell the same text with different tokens continue differently. Hidden states
        are never cached (`GenerationCache` drops them).
        """
        key = self.model_dump(
            exclude={
                "n", "first_index", "messages", "prompt", "logprobs", "top_logprobs", "hidden_states",
                "continuation_ids", "confidence_stop", "thinking", "tools", "tool_choice", "response_format",
            }
        )
        for name in ("tools", "tool_choice", "response_format"):
            if getattr(self, name) is not None:
                key[name] = getattr(self, name)
        if self.top_logprobs:
            key["top_logprobs"] = self.top_logprobs
        if self.continuation_ids is not None:
            key["continuation_ids"] = list(self.continuation_ids)
        if self.confidence_stop is not None:
            key["confidence_stop"] = self.confidence_stop.model_dump()
        if self.thinking is not None:
            key["thinking"] = self.thinking.model_dump()
        return key


class Completion(BaseModel):
    """One sample."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    completion_tokens: int
    #: "stop" (EOS or a stop string), "length", or "confidence" (the request's `confidence_stop`)
    finish_reason: str
    logprobs: tuple[float, ...] | None = None
    #: Per generated position, token text -> log-probability for the request's
    #: `top_logprobs` most likely tokens (tokens decoding to the same text are merged,
    #: so a map may hold fewer). None unless the request asked for them.
    top_logprobs: tuple[dict[str, float], ...] | None = None
    #: The generated token ids, where the backend has them: prompt ids + these continue the
    #: sample token-exactly (step-wise search), even where the text would re-tokenize differently.
    token_ids: tuple[int, ...] | None = None
    #: One final-layer hidden state per generated token, when the request asked for them.
    hidden_states: tuple[tuple[float, ...], ...] | None = None
    #: The stop string that ended the sample (finish_reason "stop"), which `text` leaves out;
    #: None when it ended otherwise (EOS, its token limit) or the backend cannot tell.
    #: Backends with token ids give it as those tokens spelled it (a "\n" stop met inside a
    #: "\n\n" token is "\n\n"), so text + stopped_by is what token_ids spell. Step-wise
    #: search reads it to tell a step boundary from the end of an answer.
    stopped_by: str | None = None


class GenerationResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    completions: tuple[Completion, ...]
    prompt_tokens: int
    usage: Usage


class BackendInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    parameters: int | None = None
    context_length: int | None = None


def add_logprob(top: dict[str, float], text: str, logprob: float) -> None:
    """Count a token's probability towards `top[text]`, in log space: tokens that decode to the
    same text (" Yes" spelled two ways) are one answer to whoever reads the map."""
    known = top.get(text)
    if known is not None:  # log(exp(a) + exp(b)), without underflow
        logprob = max(known, logprob) + math.log1p(math.exp(-abs(known - logprob)))
    top[text] = logprob
