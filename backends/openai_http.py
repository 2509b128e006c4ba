"""The `openai` backend: any OpenAI-compatible server (vLLM, llama.cpp, SGLang, hosted APIs).

Chat requests go to /chat/completions; raw continuations go to /completions:
a `prompt`, or messages that end with an assistant turn, rendered here with
the model's chat template so the reply goes on from that turn's text. `n`
samples are asked for in one call; a server that refuses `n` (an error, or
fewer choices than asked) gets parallel single calls instead, and is
remembered as such. Token counts come from the server's `usage`; when a
server leaves them out they are estimated with the model's tokenizer and the
call is counted in `Usage.estimated_calls`. Where the requests go, and what
happens when a server fails, is `EndpointPool`'s business.

Budgets are planned before a call on the prompt's length as counted here.
Without the model's tokenizer (and chat template) that length is a guess of
four characters a token, which cannot bound what the server will count, so a
budget limiting prompt tokens, total tokens or FLOPs refuses such calls
(`BudgetUnenforceable`) rather than overshoot; a server not yet known to honour
`n` is planned as n calls, each sending the prompt.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestra.backends.base import Backend, BackendUnavailable, Prompt, backend
from orchestra.backends.endpoint_pool import EndpointPool, RemoteError
from orchestra.backends.generation import (
    CONTINUATION,
    LOGPROBS,
    BackendInfo,
    Completion,
    GenerationRequest,
    GenerationResult,
    add_logprob,
)
from orchestra.backends.model_spec import ModelSpec
from orchestra.tool_calls import FunctionCall, ToolCall, render_tool_calls
from orchestra.usage import Usage

#: How servers word "the prompt does not fit" (OpenAI, vLLM, llama.cpp, SGLang, TGI).
_CONTEXT_ERROR = re.compile(
    r"context[ _](length|window)|maximum context|context_length_exceeded|n_ctx|"
    r"too many tokens|prompt is too long|input is too long|exceeds? the (model|max)",
    re.IGNORECASE,
)


class ContextLengthExceeded(ValueError):
    """The prompt plus `max_tokens` does not fit the served model's context."""


class OpenAIOptions(BaseModel):
    """How to reach one model served by OpenAI-compatible servers (vLLM, llama.cpp, SGLang, hosted APIs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoints: tuple[str, ...] = Field(
        min_length=1,
        description="Base URLs ending before /chat/completions, e.g. http://127.0.0.1:8000/v1. "
        "Several servers of the same model share the load (each request goes to the least busy one).",
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the environment variable holding the API key. The key itself is never "
        "written in a recipe, a trace or a log.",
    )
    max_concurrency: int = Field(default=16, ge=1, description="Requests in flight per endpoint.")
    timeout: float = Field(default=300.0, gt=0, description="Seconds to wait for one response.")
    retries: int = Field(
        default=5, ge=0, description="Retries of a call after 429, 5xx, a timeout or a dropped connection."
    )
    backoff: float = Field(
        default=0.5, ge=0, description="Seconds before the first retry; doubles on each retry, with jitter."
    )
    max_backoff: float = Field(default=30.0, gt=0, description="Longest wait between two tries (Retry-After included).")
    tokenizer: str | None = Field(
        default=None,
        description="A model name orchestra can load (alias, HF folder, .gguf) whose tokenizer estimates "
        "prompt tokens before a call and token counts a server leaves out. Default: `model`, when "
        "orchestra knows it; otherwise about 4 characters per token.",
    )
    parameters: int | None = Field(
        default=None, ge=1, description="Parameter count of the served model, for FLOPs estimates and budgets."
    )
    context_length: int | None = Field(
        default=None, ge=1, description="The served model's context length, if known (checked before a call)."
    )
    logprobs: bool = Field(default=True, description="Ask the server for the sampled tokens' log-probabilities.")
    continue_final_message: bool = Field(
        default=False,
        description="The server's chat endpoint continues a final assistant turn when asked "
        "(vLLM: `continue_final_message`). Continuations then go there instead of being rendered "
        "here with the model's chat template and sent to /completions.",
    )

    @field_validator("endpoints", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = []
        for url in value:
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(f"endpoint {url!r} is not an http(s) URL such as http://127.0.0.1:8000/v1")
            cleaned.append(url.rstrip("/"))
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("endpoints are listed more than once")
        return tuple(cleaned)


class OpenAIModelOptions(BaseModel):
    """The openai backend's own settings in a model entry: its `openai:` block."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    openai: OpenAIOptions | None = Field(
        default=None, description="Servers and client settings (`model` is the server's model name)."
    )

    @model_validator(mode="after")
    def _required(self) -> OpenAIModelOptions:
        if self.openai is None:
            raise ValueError("backend 'openai' needs an `openai:` block with at least `endpoints`")
        return self


@backend("openai")
class OpenAIBackend(Backend):
    """A model behind one or more OpenAI-compatible HTTP endpoints."""

    capabilities = frozenset({LOGPROBS, CONTINUATION})
    Options = OpenAIModelOptions

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        options = self._client_options()
        #: How to reach the servers: the model entry's `openai:` block.
        self.servers = options
        api_key = None
        if options.api_key_env:
            api_key = os.environ.get(options.api_key_env)
            if not api_key:
                raise BackendUnavailable(
                    f"model {spec.model!r}: environment variable {options.api_key_env} "
                    "(its `api_key_env`) is not set"
                )
        self.pool = self._pool(options, api_key)
        self.tokenizer = _load_tokenizer(options.tokenizer, spec.model)
        #: Whether the server honours `n` (None until a call with n > 1 has told).
        self.accepts_n: bool | None = None

    def _client_options(self) -> OpenAIOptions:
        """The model entry's block of client settings (a subclass reads its own block)."""
        return self.options.openai  # type: ignore[attr-defined]

    def _pool(self, options: OpenAIOptions, api_key: str | None) -> EndpointPool:
        """What sends the requests, with the retry and load-spreading rules of `EndpointPool`."""
        return EndpointPool(
            options.endpoints,
            api_key=api_key,
            max_concurrency=options.max_concurrency,
            timeout=options.timeout,
            retries=options.retries,
            backoff=options.backoff,
            max_backoff=options.max_backoff,
        )

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            name=f"{self.name}:{self.spec.model}",
            parameters=self.servers.parameters,
            context_length=self.servers.context_length,
        )

    @classmethod
    def spec_key(cls, spec: ModelSpec, dtype: str | None = None) -> str:
        """A served model is named by its server-side name and its endpoints, so two servers
        that both call their model "default" never share cached samples."""
        return f"openai:{spec.model}@{','.join(sorted(spec.options.openai.endpoints))}"  # type: ignore[attr-defined]

    @property
    def busy_seconds(self) -> float:
        return self.pool.busy_seconds

    # ----- token counts ------------------------------------------------------------------

    def _templated(self) -> bool:
        return self.tokenizer is not None and bool(getattr(self.tokenizer, "chat_template", None))

    @staticmethod
    def _continues(request: GenerationRequest) -> bool:
        """Messages that end with an assistant turn ask for that turn to be continued."""
        return bool(request.messages) and request.messages[-1].role == "assistant"  # type: ignore[index]

    def _uses_chat(self, request: GenerationRequest) -> bool:
        if request.messages is None:
            return False
        return not self._continues(request) or self.servers.continue_final_message

    def prepare(self, request: GenerationRequest) -> Prompt:
        """The request as it is sent (the server renders it), counted as it renders here: the
        cache keys on what the server is asked, the budget plans on an estimate."""
        sent = request.model_dump_json(include={"messages", "prompt"})
        counted = self.tokenizer is not None and (request.messages is None or self._templated())
        return Prompt(text=sent, tokens=self.count_tokens(self.render(request)), estimated=not counted)

    def prefills(self, request: GenerationRequest) -> int:
        """One prompt for n samples only where the server is known to honour `n`; otherwise
        the call may become n single calls, each sending (and billing) the prompt."""
        return 1 if request.n == 1 or self.accepts_n else request.n

    def render(self, request: GenerationRequest) -> str:
        """With the model's chat template here, what the server will render; without it, a
        plain transcript, whose length is close enough for an estimate."""
        if self._templated() or request.messages is None:
            return super().render(request)
        return "\n".join(f"{m.role}: {m.content}" for m in request.messages)

    def _continuation_prompt(self, request: GenerationRequest) -> str:
        """A chat endpoint would open a new turn after an assistant message; to go on from
        its text instead, the conversation is rendered here and sent as a raw prompt."""
        if not self._templated():
            raise ValueError(
                f"model {self.spec.model!r}: continuing an assistant turn (a partial answer) needs either "
                "the model's chat template, to render it here for the /completions endpoint (name a tokenizer "
                "in its `openai:` block: `tokenizer: ...`), or a server whose chat endpoint continues a final "
                "message (vLLM: set `continue_final_message: true` in the `openai:` block)"
            )
        return self.render(request)

    # ----- calls -------------------------------------------------------------------------

    def _body(self, request: GenerationRequest, n: int, offset: int) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.spec.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if n > 1:
            body["n"] = n
        if request.top_k > 0:  # not in OpenAI's API; vLLM, llama.cpp and SGLang read it
            body["top_k"] = request.top_k
        if request.stop:
            body["stop"] = list(request.stop)
        seed = request.sample_seed(offset)
        if seed is not None:
            body["seed"] = seed
        if request.thinking is not None:  # vLLM's hard limit; other servers ignore the field
            body["thinking_token_budget"] = request.thinking.server_budget(f"model {self.spec.model!r}")
        wants_logprobs = request.logprobs and self.servers.logprobs
        top = _top_wanted(request) if self.servers.logprobs else 0
        if self._uses_chat(request):
            body["messages"] = [m.model_dump() for m in request.messages or ()]
            if self._continues(request):  # only with `continue_final_message` (see _uses_chat)
                body["continue_final_message"], body["add_generation_prompt"] = True, False
            if wants_logprobs or top:  # llama-cpp-python sends none without top_logprobs, llama-server none at 0
                body["logprobs"], body["top_logprobs"] = True, max(1, top)
            for name in ("tools", "tool_choice", "response_format"):  # passed on as the client gave them
                if getattr(request, name) is not None:
                    body[name] = list(request.tools) if name == "tools" else getattr(request, name)
            return "/chat/completions", body
        body["prompt"] = request.prompt if request.prompt is not None else self._continuation_prompt(request)
        if wants_logprobs or top:
            body["logprobs"] = max(1, top)
        return "/completions", body

    async def _call(self, request: GenerationRequest, prompt: Prompt, n: int, offset: int) -> dict[str, Any]:
        path, body = self._body(request, n, offset)
        try:
            return await self.pool.post(path, body, expect="choices")
        except RemoteError as err:
            if err.code == "context_length_exceeded" or _CONTEXT_ERROR.search(err.message):
                raise ContextLengthExceeded(
                    f"model {self.spec.model!r}: the prompt (about {prompt.tokens} tokens) "
                    f"and max_tokens={request.max_tokens} do not fit the server's context length "
                    f"({err.url} said: {err.message})"
                ) from None
            raise

    async def complete(self, request: GenerationRequest, prompt: Prompt) -> GenerationResult:
        """The prompt's token count is an estimate (the server renders and tokenizes); the
        server's own count, when it reports one, replaces it in the usage of the call."""
        limit = self.servers.context_length
        if limit is not None and prompt.tokens >= limit:
            raise ContextLengthExceeded(
                f"prompt is about {prompt.tokens} tokens; model {self.spec.model!r} has context length {limit}"
            )
        started = time.monotonic()
        answers: list[dict[str, Any]] = []
        if request.n == 1 or self.accepts_n is not False:
            try:
                answers.append(await self._call(request, prompt, request.n, 0))
            except RemoteError as err:
                if request.n == 1 or err.status not in (400, 422):
                    raise
                self.accepts_n = False  # retried below as single calls; a real error shows up there too
        got = sum(len(a["choices"]) for a in answers)
        if request.n > 1 and answers:
            self.accepts_n = got >= request.n
        if got < request.n:
            answers += await asyncio.gather(*(self._call(request, prompt, 1, k) for k in range(got, request.n)))
        return self._result(request, prompt, answers, time.monotonic() - started)

    def _result(
        self, request: GenerationRequest, prompt: Prompt, answers: list[dict[str, Any]], seconds: float
    ) -> GenerationResult:
        completions: list[Completion] = []
        prompt_tokens: int | None = None
        prompt_total = cached = completion_total = 0
        estimated = False
        for answer in answers:
            usage = answer.get("usage") or {}
            reported_prompt = _count_field(usage, "prompt_tokens")
            reported_completion = _count_field(usage, "completion_tokens")
            if reported_prompt is None or reported_completion is None:
                estimated = True
            if reported_prompt is None:
                reported_prompt = prompt.tokens
            prompt_tokens = reported_prompt if prompt_tokens is None else prompt_tokens
            prompt_total += reported_prompt
            cached += _count_field(usage.get("prompt_tokens_details") or {}, "cached_tokens") or 0
            choices = sorted(answer["choices"], key=lambda c: c.get("index", 0))
            own = []
            exact = True  # every choice counted by its logprobs
            for choice in choices:
                completion, counted = self._completion(choice, request)
                if len(choices) == 1 and reported_completion is not None:
                    counted = reported_completion
                elif counted is None:  # n choices, no logprobs to count them by
                    counted, exact = self.count_tokens(completion.text), False
                    estimated = True
                own.append(completion.model_copy(update={"completion_tokens": counted}))
            counted_here = sum(c.completion_tokens for c in own)
            if reported_completion is None:
                completion_total += counted_here
            else:  # llama-server's usage counts only the first of n choices: exact counts of our own win then
                completion_total += max(reported_completion, counted_here) if exact else reported_completion
            completions += own
        usage = Usage(
            calls=len(answers),
            prompt_tokens=prompt_total,
            cached_prompt_tokens=cached,
            completion_tokens=completion_total,
            flops=2.0 * (self.servers.parameters or 0) * (prompt_total + completion_total),
            seconds=seconds,
            estimated_calls=len(answers) if estimated else 0,
        )
        return GenerationResult(
            completions=tuple(completions[: request.n]), prompt_tokens=prompt_tokens or 0, usage=usage
        )

    def _completion(self, choice: dict[str, Any], request: GenerationRequest) -> tuple[Completion, int | None]:
        """A choice as a Completion, and its token count when its logprobs tell it."""
        chat = self._uses_chat(request)
        if chat:
            message = choice.get("message") or {}
            text = message.get("content") or ""
            calls = _tool_calls(message.get("tool_calls"))
            if calls:  # candidates carry calls as text: the blocks a local model would write
                text = "\n".join(part for part in (text, render_tool_calls(calls)) if part)
        else:
            text = choice.get("text") or ""
        logprobs = _logprobs(choice.get("logprobs"))
        extra: dict[str, Any] = {}
        top = _top_wanted(request)
        if top and "top_logprobs" in Completion.model_fields:
            extra["top_logprobs"] = _top_logprob_maps(choice.get("logprobs"), top)
        stopped_by = choice.get("stop_reason")  # vLLM names the stop string that matched
        completion = Completion(
            text=text,
            completion_tokens=0,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            logprobs=logprobs if request.logprobs else None,
            stopped_by=stopped_by if isinstance(stopped_by, str) and stopped_by in request.stop else None,
            **extra,
        )
        return completion, (len(logprobs) if logprobs is not None else None)

    async def aclose(self) -> None:
        await self.pool.aclose()


def _tool_calls(items: Any) -> list[ToolCall]:
    """A chat message's `tool_calls`, those of them that are well formed."""
    calls = []
    for item in items if isinstance(items, list) else ():
        function = item.get("function") if isinstance(item, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            arguments = function.get("arguments")
            arguments = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
            calls.append(ToolCall(id=str(item.get("id") or ""), function=FunctionCall(name=function["name"], arguments=arguments)))
    return calls


def _count_field(block: dict[str, Any], name: str) -> int | None:
    value = block.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _top_wanted(request: GenerationRequest) -> int:
    """Most likely tokens asked for per position (`GenerationRequest.top_logprobs`, where this
    version of the core has the field)."""
    return int(getattr(request, "top_logprobs", 0) or 0)


def _top_logprob_maps(block: Any, k: int) -> tuple[dict[str, float], ...] | None:
    """Per position, token text -> log-probability of the `k` most likely tokens, from a chat
    (`content[i].top_logprobs`) or legacy (`top_logprobs[i]`) block; tokens with the same
    text are merged (probabilities added)."""
    if not isinstance(block, dict):
        return None
    if isinstance(block.get("content"), list):
        positions = [
            [(e.get("token"), e.get("logprob")) for e in item.get("top_logprobs") or [] if isinstance(e, dict)]
            for item in block["content"] if isinstance(item, dict)
        ]
    elif isinstance(block.get("top_logprobs"), list):
        positions = [list((entry or {}).items()) for entry in block["top_logprobs"]]
    else:
        return None
    maps = []
    for entries in positions:
        ranked = sorted(
            ((t, float(v)) for t, v in entries if isinstance(t, str) and isinstance(v, (int, float))),
            key=lambda pair: -pair[1],
        )[:k]
        merged: dict[str, float] = {}
        for token, logprob in ranked:
            add_logprob(merged, token, logprob)
        maps.append(merged)
    return tuple(maps)


def _logprobs(block: Any) -> tuple[float, ...] | None:
    """Sampled-token log-probabilities from a chat (`content`) or legacy (`token_logprobs`) block."""
    if not isinstance(block, dict):
        return None
    if isinstance(block.get("content"), list):
        values = [item.get("logprob") for item in block["content"] if isinstance(item, dict)]
    elif isinstance(block.get("token_logprobs"), list):
        values = block["token_logprobs"]
    else:
        return None
    if any(not isinstance(v, (int, float)) for v in values):
        return None
    return tuple(float(v) for v in values)


def _load_tokenizer(name: str | None, model: str):
    """The named tokenizer (an error if it cannot be loaded), else the model's own when
    orchestra finds it on this machine, else None (token counts by rule of thumb)."""
    from orchestra.models import ModelNotFound, load_tokenizer, resolve

    if name is not None:
        return load_tokenizer(name)
    try:
        source = resolve(model)
    except ModelNotFound:
        return None
    try:
        if source.gguf_file is None and not os.path.isdir(source.path):
            from transformers import AutoTokenizer  # a hub id: only if already in the local cache

            return AutoTokenizer.from_pretrained(source.path, local_files_only=True)
        return load_tokenizer(model)
    except (OSError, ValueError):
        return None
