"""`orchestra serve`: recipes behind an OpenAI-compatible chat API.

Each served recipe is a model name. A chat request becomes a one-problem run
of that recipe on the request's messages; the reply is the recipe's output,
and its `usage` counts every token the recipe spent on every call (so a client
sees what a 16-sample vote really cost). Requests run concurrently on the
recipe's shared engine, so the local backend batches the model calls of all
requests in flight together.

Limits: the request body's size, `n` (each choice is a separate run of the
recipe), the prompt's length (checked against every model's context before
anything runs), and the tokens a request may make the recipe spend — the
client's `max_tokens` (or `max_completion_tokens`) caps the completion tokens
of all the recipe's calls for one choice, as in OpenAI's API, and the server's
`max_tokens_per_request` caps the whole request, all its choices together. A
recipe's `per_problem` budget applies to each choice, its `per_run` budget to
everything the server spends while it runs.

A choice's `finish_reason` is "length" when a token limit cut it: its text
ended at its call's token limit, a limit refused a call the recipe needed, or
the calls it shrank left the recipe no answer; "tool_calls" when it calls tools;
otherwise "stop".

A request's `tools`, `tool_choice` and `response_format` ride on its problem to
every sampling node; the `<tool_call>` blocks of the output's text come back as
the message's `tool_calls` (`orchestra.tool_calls`). Streaming is described in
`_Service.stream`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from orchestra.backends import GenerationRequest
from orchestra.budget import Limits
from orchestra.cache import GenerationCache
from orchestra.executor import Executor
from orchestra.oracle import refuse_oracle
from orchestra.problem import Problem
from orchestra.recipe import Recipe
from orchestra.results import ProblemResult
from orchestra.server.openai_schema import ChatRequest, OpenAIError, parse_chat_request
from orchestra.streaming import StreamListener, listening
from orchestra.tool_calls import parse_tool_calls
from orchestra.usage import Usage

T = TypeVar("T")


class ServeSettings(BaseModel):
    """What a server accepts and how much it lets one request spend."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: str | None = Field(default=None, description="Bearer token clients must send; None: no auth.")
    max_request_bytes: int = Field(default=1_000_000, ge=1)
    max_n: int = Field(default=4, ge=1, description="Most choices (recipe runs) per request.")
    max_tokens_per_request: int | None = Field(
        default=None,
        ge=1,
        description="Most completion tokens one request may make the recipe spend, all its choices together "
        "(a client's max_tokens is per choice, so n x max_tokens must fit; without one, the choices share it evenly).",
    )
    concurrency: int = Field(default=64, ge=1, description="Recipe runs in flight at once (more wait).")
    keepalive_seconds: float = Field(default=10.0, gt=0, description="SSE comment interval while a stream waits.")
    allow_oracle: bool = Field(
        default=False, description="Serve recipes that choose with an oracle scorer (measurement only; see orchestra.oracle)."
    )


class ServedRecipe:
    """One recipe as a model: its engine, and how a chat request becomes a run of it."""

    def __init__(self, recipe: Recipe, cache: GenerationCache | None):
        self.recipe = recipe
        self.engine = Executor(recipe, cache=cache)
        for backend in set(self.engine.backends.values()):
            backend.load()  # weights now, not at a client's first uncached request
        self.created = int(time.time())

    @property
    def streams_tokens(self) -> bool:
        """Whether a reply is one sample's text as decoded: the recipe is one `sample` node drawing
        one sample (its tokens can be streamed as they come; any other recipe's reply exists only
        once the recipe has chosen it)."""
        nodes = self.recipe.nodes
        return len(nodes) == 1 and nodes[0].technique == "sample" and getattr(nodes[0].parsed_params(), "n", 0) == 1

    def problems(self, request: ChatRequest) -> list[Problem]:
        """One problem per choice. With a seed, ids (and so every node's seed) follow from the
        messages and the seed: the same request gives the same answer, and replays from the
        cache when one is on. Without, each request samples afresh."""
        messages = tuple(m.to_message() for m in request.messages)
        asks = {name: request.wire(name) for name in _ASKS if getattr(request, name) is not None}
        if request.seed is not None:
            turns = [[m.role, m.content] if m.tool_calls is None and m.tool_call_id is None else m.model_dump(mode="json")
                     for m in messages]
            blob = json.dumps(turns) + (json.dumps(asks, sort_keys=True) if asks else "") + f"/{request.seed}"
            stem = "req-" + hashlib.sha256(blob.encode()).hexdigest()[:16]
        else:
            stem = "req-" + uuid.uuid4().hex[:16]
        return [Problem(id=f"{stem}-{i}", messages=messages, **asks) for i in range(request.n)]

    def check_context(self, request: ChatRequest) -> None:
        """Refuse messages that do not fit a model's context, by the rule each backend applies
        itself (the prompt as that model reads it needs room for one more token), before
        anything runs: a client gets a 400, not a failed run or a broken stream."""
        asked = GenerationRequest(messages=tuple(m.to_message() for m in request.messages), tools=request.wire("tools"))
        for backend in set(self.engine.backends.values()):
            limit = backend.info.context_length
            if limit is None:
                continue
            try:
                tokens = backend.prepare(asked).tokens
            except Exception as err:  # e.g. a chat template that refuses this order of roles
                raise OpenAIError(
                    400, f"{backend.info.name} cannot read these messages: {err}", param="messages"
                ) from None
            if tokens >= limit:
                raise OpenAIError(
                    400,
                    f"This model's maximum context length is {limit} tokens; the messages are {tokens} tokens "
                    f"({backend.info.name}). Shorten them.",
                    param="messages",
                    code="context_length_exceeded",
                )


#: The request fields a served recipe's sampling nodes take from the client (see `Problem`).
_ASKS = ("tools", "tool_choice", "response_format")


def _usage_block(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
    }


def _server_error(err: Exception) -> OpenAIError:
    return OpenAIError(500, f"the server failed: {type(err).__name__}: {err}", type="server_error")


def _pieces(text: str) -> list[str]:
    """Word-sized stream deltas that concatenate back to exactly `text`."""
    return [piece for piece in re.findall(r"\S*\s*", text) if piece]


class _Service:
    def __init__(self, recipes: list[Recipe], settings: ServeSettings, cache: GenerationCache | None):
        names = [r.name for r in recipes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"two served recipes share the name {', '.join(duplicates)}; rename one")
        if not recipes:
            raise ValueError("serve at least one recipe")
        for recipe in recipes:  # before any model loads
            refuse_oracle(recipe, doing="serving", allow=settings.allow_oracle)
        self.settings = settings
        self.served = {r.name: ServedRecipe(r, cache) for r in recipes}
        self.gate = asyncio.Semaphore(settings.concurrency)  # bound to a loop at first use (Python >= 3.10)

    # ----- checks -------------------------------------------------------------------------

    def authorize(self, request: Request) -> None:
        key = self.settings.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            raise OpenAIError(401, "Incorrect or missing API key (send Authorization: Bearer KEY)", code="invalid_api_key")

    async def read_json(self, request: Request) -> Any:
        limit = self.settings.max_request_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise OpenAIError(413, f"request body is {declared} bytes; this server accepts at most {limit}")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise OpenAIError(413, f"request body exceeds this server's limit of {limit} bytes")
        try:
            return json.loads(raw)
        except ValueError as err:
            raise OpenAIError(400, f"the request body is not valid JSON: {err}") from None

    def check(self, chat: ChatRequest) -> tuple[ServedRecipe, list[Limits | None]]:
        """The served recipe and each choice's token limit, or the OpenAIError refusing the request."""
        served = self.served.get(chat.model)
        if served is None:
            raise OpenAIError(
                404,
                f"The model {chat.model!r} does not exist here; served recipes: {', '.join(sorted(self.served))}",
                param="model",
                code="model_not_found",
            )
        if chat.n > self.settings.max_n:
            raise OpenAIError(400, f"n={chat.n} exceeds this server's limit of {self.settings.max_n}", param="n")
        limits = self.choice_limits(chat)
        served.check_context(chat)
        return served, limits

    def choice_limits(self, chat: ChatRequest) -> list[Limits | None]:
        """Each choice's completion-token limit: the client's (per choice), such that all the
        choices together stay within the server's per-request total; without a client limit,
        the choices share that total evenly."""
        asked, total, n = chat.token_cap, self.settings.max_tokens_per_request, chat.n
        if total is None:
            return [Limits(completion_tokens=asked) if asked is not None else None] * n
        if asked is not None:
            if asked * n > total:
                param = "max_completion_tokens" if chat.max_completion_tokens else "max_tokens"
                spent = f"{param}={asked}" + (f" for each of n={n} choices ({asked * n} tokens)" if n > 1 else "")
                raise OpenAIError(
                    400, f"{spent} exceeds this server's limit of {total} completion tokens per request", param=param
                )
            return [Limits(completion_tokens=asked)] * n
        if total < n:
            raise OpenAIError(
                400, f"n={n} choices need a token each; this server allows {total} completion tokens per request", param="n"
            )
        share, rest = divmod(total, n)
        return [Limits(completion_tokens=share + (i < rest)) for i in range(n)]

    # ----- running ------------------------------------------------------------------------

    async def run(self, served: ServedRecipe, chat: ChatRequest, limits: list[Limits | None]) -> list[ProblemResult]:
        async def one(problem: Problem, limit: Limits | None) -> ProblemResult:
            async with self.gate:
                return await served.engine.run_problem(problem, limit)

        results = await asyncio.gather(*(one(p, limit) for p, limit in zip(served.problems(chat), limits)))
        failed = [r for r in results if r.status == "error"]
        if failed:
            raise OpenAIError(500, f"the recipe failed: {failed[0].error}", type="server_error")
        return list(results)

    @staticmethod
    def choice_fields(result: ProblemResult) -> tuple[str, str]:
        """(text, finish_reason): "length" when a token limit cut the choice (see the module doc)."""
        text = result.text or ""
        cut = (
            result.status == "budget"
            or result.finish_reason == "length"
            or (not text and result.shrunk_calls > 0)
        )
        return text, "length" if cut else "stop"

    @staticmethod
    def message(chat: ChatRequest, text: str, reason: str) -> tuple[dict[str, Any], str]:
        """The assistant message of a choice and its finish_reason: with tools offered, the
        `<tool_call>` blocks of its text become `tool_calls` (finish_reason "tool_calls")."""
        if chat.tools and chat.tool_choice != "none":
            content, calls = parse_tool_calls(text)
            if calls:
                message = {"role": "assistant", "content": content or None,
                           "tool_calls": [c.model_dump() for c in calls]}
                return message, "tool_calls" if reason == "stop" else reason
        return {"role": "assistant", "content": text}, reason

    def reply(self, served: ServedRecipe, chat: ChatRequest, results: list[ProblemResult], reply_id: str) -> dict[str, Any]:
        usage = sum((r.usage for r in results), Usage())
        choices = []
        for index, result in enumerate(results):
            message, reason = self.message(chat, *self.choice_fields(result))
            choices.append({"index": index, "message": message, "finish_reason": reason, "logprobs": None})
        return {
            "id": reply_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": served.recipe.name,
            "choices": choices,
            "usage": _usage_block(usage),
            "orchestra": {
                "answers": [r.answer for r in results],
                "statuses": [r.status for r in results],
                "usage": usage.model_dump(),
            },
        }

    async def stream(
        self, served: ServedRecipe, chat: ChatRequest, limits: list[Limits | None], reply_id: str
    ) -> AsyncIterator[str]:
        """SSE. A single-sample recipe (one `sample` node, n=1; one choice; no tools) streams its
        text as the engine decodes it; any other recipe streams a progress event per finished
        node (chunks with no choices and an `orchestra.progress` block), then each choice's
        final message as word-sized deltas (its tool calls as `tool_calls` deltas). Comments
        keep the connection alive while nothing happens; then the usage (if asked), then
        `[DONE]`. A run that fails once the stream has begun (its 200 sent) ends it with an
        error event, then `[DONE]`, so every client sees the error and the end."""
        created = int(time.time())

        def event(choices: list[dict[str, Any]], **extra: Any) -> str:
            chunk = {"id": reply_id, "object": "chat.completion.chunk", "created": created,
                     "model": served.recipe.name, "choices": choices, **extra}
            return f"data: {json.dumps(chunk)}\n\n"

        tokens = served.streams_tokens and chat.n == 1 and not chat.tools
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        listener = StreamListener(
            text=(lambda piece: queue.put_nowait(("text", piece))) if tokens else None,
            progress=lambda progress: queue.put_nowait(("progress", progress)),
        )
        with listening(listener):  # the run's task copies the context, listener included
            task = asyncio.ensure_future(self.run(served, chat, limits))
        streamed = ""
        try:
            if tokens:
                yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            while True:
                getting = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {task, getting}, timeout=self.settings.keepalive_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                if not getting.done():
                    getting.cancel()
                    pending = []
                else:
                    pending = [getting.result()]
                if task.done():
                    while not queue.empty():
                        pending.append(queue.get_nowait())
                for kind, value in pending:
                    if kind == "text":
                        streamed += value
                        yield event([{"index": 0, "delta": {"content": value}, "finish_reason": None}])
                    else:
                        yield event([], orchestra={"progress": value})
                if task.done():
                    break
                if not done:
                    yield ": running\n\n"
            try:
                results = task.result()
            except Exception as err:
                shaped = err if isinstance(err, OpenAIError) else _server_error(err)
                yield f"data: {json.dumps(shaped.body())}\n\n"
                yield "data: [DONE]\n\n"
                return
            for index, result in enumerate(results):
                message, reason = self.message(chat, *self.choice_fields(result))
                if tokens:  # the rest of the text the decode did not send (held back, or replayed from the cache)
                    text = message["content"]
                    rest = text[len(streamed):] if text.startswith(streamed) else ""
                    for piece in _pieces(rest):
                        yield event([{"index": index, "delta": {"content": piece}, "finish_reason": None}])
                else:
                    yield event([{"index": index, "delta": {"role": "assistant", "content": "" if message["content"] is not None else None}, "finish_reason": None}])
                    for piece in _pieces(message["content"] or ""):
                        yield event([{"index": index, "delta": {"content": piece}, "finish_reason": None}])
                    for position, call in enumerate(message.get("tool_calls") or ()):
                        yield event([{"index": index, "delta": {"tool_calls": [{"index": position, **call}]}, "finish_reason": None}])
                yield event([{"index": index, "delta": {}, "finish_reason": reason}])
            if chat.stream_options is not None and chat.stream_options.include_usage:
                yield event([], usage=_usage_block(sum((r.usage for r in results), Usage())))
            yield "data: [DONE]\n\n"
        finally:
            if not task.done():  # the client went away: stop spending tokens on it
                task.cancel()


async def _unless_client_leaves(request: Request, work: Awaitable[T]) -> T | None:
    """`work`'s result, or None once the client has disconnected: then the work is cancelled,
    so a client that gives up stops spending tokens (a stream does the same in `stream`)."""
    task = asyncio.ensure_future(work)

    async def client_gone() -> None:  # the body is read: the next message is the disconnect
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(client_gone())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return None if task.cancelled() else task.result()


def create_app(
    recipes: list[Recipe], settings: ServeSettings | None = None, cache: GenerationCache | None = None
) -> Starlette:
    """An ASGI app serving `recipes` (each under its name); run it with uvicorn."""
    service = _Service(recipes, settings or ServeSettings(), cache)

    async def chat_completions(request: Request) -> Response:
        service.authorize(request)
        chat = parse_chat_request(await service.read_json(request))
        served, limits = service.check(chat)
        reply_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        if chat.stream:
            return StreamingResponse(
                service.stream(served, chat, limits, reply_id),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        results = await _unless_client_leaves(request, service.run(served, chat, limits))
        if results is None:
            return Response(status_code=499)  # nobody is left to read it
        return JSONResponse(service.reply(served, chat, results, reply_id))

    def model_card(served: ServedRecipe) -> dict[str, Any]:
        return {"id": served.recipe.name, "object": "model", "created": served.created, "owned_by": "orchestra"}

    async def list_models(request: Request) -> Response:
        service.authorize(request)
        return JSONResponse({"object": "list", "data": [model_card(s) for s in service.served.values()]})

    async def get_model(request: Request) -> Response:
        service.authorize(request)
        name = request.path_params["name"]
        if name not in service.served:
            raise OpenAIError(404, f"The model {name!r} does not exist here", param="model", code="model_not_found")
        return JSONResponse(model_card(service.served[name]))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": sorted(service.served)})

    async def openai_error(request: Request, err: Exception) -> Response:
        assert isinstance(err, OpenAIError)
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    async def http_error(request: Request, err: Exception) -> Response:
        assert isinstance(err, HTTPException)
        shaped = OpenAIError(err.status_code, f"{request.method} {request.url.path}: {err.detail}")
        return JSONResponse(shaped.body(), status_code=err.status_code)

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{name:path}", get_model, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={OpenAIError: openai_error, HTTPException: http_error},
    )
    app.state.service = service
    return app
