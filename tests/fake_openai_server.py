"""A misbehaving OpenAI-compatible server on loopback, for the `openai` backend's tests.

Its answers follow tests/fake_backend.py's script (sample k of a sum answers
`correct + OFFSETS[k % 8]`, one word per token), so runs against it can be
checked exactly. A test steers it through attributes:

- `faults`: what the next completion requests get, one per request, in order:
  "429" (with Retry-After: `retry_after`), "500", "503", "timeout" (answers after
  `hang_seconds`, or never if the server dies first), "truncate" (promises more bytes than it sends, then
  hangs up), "garbage" (200 with a body that is not JSON), "context" (400 with a
  context-length message), "400"; an empty list means every request is answered;
- `accepts_n` (False: n > 1 is a 400), `ignores_n` (True: one choice whatever n),
  `usage` (False: no usage block; "first choice": completion tokens of the first choice only, as
  llama.cpp's llama-server reports n choices; else prompt tokens are counted one per character), `api_key` (required bearer token), `delay`
  (seconds per request), `fail_after` (answer this many requests, then act dead), `gather`
  (hold each completion request until this many are in flight at once: concurrency is then
  observed whatever the machine's load, not hoped for with a delay);
- `kill()` closes the socket and every open connection (a server that dies);
  `restart()` brings it back on the same port.

A chat request with `tools` (and a tool_choice other than "none") is answered with a
call of the first tool, its arguments {"words": the reply's word count}.

Everything it received is in `requests` (path, JSON body, headers).

The `server` fixture and `ask` serve every backend test that talks to it
(the `openai` and `litellm` backends' tests).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fake_backend import sample_words

from orchestra.backends import GenerationRequest
from orchestra.problem import Message

QUESTION = (Message(role="user", content="Compute 3 + 4 ="),)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection)

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)
        self.wfile.flush()

    def do_GET(self) -> None:
        if self.path in ("/health", "/v1/health"):
            self._send(200, {"status": "ok"})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "fake-served", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        owner._record(self.path, body, dict(self.headers))
        with owner._lock:
            owner.in_flight += 1
            owner.most_in_flight = max(owner.most_in_flight, owner.in_flight)
        try:
            owner._wait_for_company()
            self._answer(owner, body)
        finally:
            with owner._lock:
                owner.in_flight -= 1

    def _answer(self, owner: FakeOpenAIServer, body: dict[str, Any]) -> None:
        if owner.api_key is not None and self.headers.get("Authorization") != f"Bearer {owner.api_key}":
            self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
            return
        if owner.delay:
            time.sleep(owner.delay)
        fault = owner._next_fault()
        if fault == "429":
            self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": str(owner.retry_after)})
        elif fault in ("500", "503"):
            self._send(int(fault), {"error": {"message": "internal error"}})
        elif fault == "timeout":
            if not owner._stopped.wait(owner.hang_seconds):
                self._send(200, owner.completion(self.path, body))
        elif fault == "truncate":
            raw = json.dumps(owner.completion(self.path, body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw[: len(raw) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif fault == "garbage":
            self._send(200, b'{"choices": [{"index": 0, "mess')
        elif fault == "context":
            self._send(400, {"error": {"message": "This model's maximum context length is 2048 tokens. "
                                                  "However, you requested 4000 tokens.",
                                       "code": "context_length_exceeded"}})
        elif fault == "400":
            self._send(400, {"error": {"message": "unsupported parameter: frobnicate"}})
        elif (body.get("n") or 1) > 1 and not owner.accepts_n:
            self._send(400, {"error": {"message": "only n=1 is supported"}})
        else:
            self._send(200, owner.completion(self.path, body))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FakeOpenAIServer


class FakeOpenAIServer:
    """See the module docstring. Use as a context manager, or call start()/kill()."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.faults: deque[str] = deque()
        self.retry_after = 1
        self.hang_seconds = 5.0
        self.accepts_n = True
        self.ignores_n = False
        self.usage: bool | str = True
        self.api_key: str | None = None
        self.delay = 0.0
        self.fail_after: int | None = None
        self.gather: int | None = None
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.answered = 0
        self._lock = threading.Lock()
        self._arrivals = threading.Condition(self._lock)
        self._stopped = threading.Event()
        self._groups_gathered = 0
        self._connections: list[socket.socket] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        self._stopped.clear()
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def kill(self) -> None:
        """Die: stop listening and cut every open connection."""
        with self._lock:
            server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            for conn in self._connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._connections.clear()
        self._stopped.set()  # dead: the port is free to restart on

    def restart(self) -> None:
        self.fail_after = None
        self.start()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()

    # ----- internals used by the handler -----------------------------------------------

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.append(conn)

    def _record(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((path, body, headers))

    def _wait_for_company(self) -> None:
        """With `gather`, wait until `gather` requests are in flight together (each group once)."""
        with self._arrivals:
            if not self.gather:
                return
            group = self._groups_gathered
            if self.in_flight >= self.gather:
                self._groups_gathered += 1
                self._arrivals.notify_all()
                return
            # the deadline only ends a test whose client never sends the rest of a group
            if not self._arrivals.wait_for(lambda: self._groups_gathered > group, timeout=120):
                raise RuntimeError(f"fake server: {self.gather} requests never were in flight together")

    def _next_fault(self) -> str:
        with self._lock:
            if self.fail_after is not None and self.answered >= self.fail_after:
                if self._server is not None:
                    threading.Thread(target=self.kill, daemon=True).start()
                return "truncate"
            self.answered += 1
            return self.faults.popleft() if self.faults else "ok"

    def completions(self) -> list[dict[str, Any]]:
        """Bodies of the completion requests received."""
        return [body for path, body, _ in self.requests if path.endswith("completions")]

    def completion(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        chat = path.endswith("/chat/completions")
        if chat:
            prompt = "\n".join(f"{m['role']}: {m['content']}" for m in body["messages"])
        else:
            prompt = body["prompt"]
        n = 1 if self.ignores_n else (body.get("n") or 1)
        seed = body.get("seed")
        choices, completion_tokens = [], 0
        for index in range(n):
            words = sample_words(prompt, seed, index)
            cut = words[: body.get("max_tokens") or 16]
            reason = "length" if len(cut) < len(words) else "stop"
            text = " ".join(cut)
            completion_tokens += len(cut) if index == 0 or self.usage != "first choice" else 0
            logprobs = [-0.1 * (1 + j % 5) for j in range(len(cut))]
            choice: dict[str, Any] = {"index": index, "finish_reason": reason}
            if chat and body.get("tools") and body.get("tool_choice") != "none":  # it calls the first tool
                name = body["tools"][0]["function"]["name"]
                choice["message"] = {"role": "assistant", "content": None, "tool_calls": [
                    {"id": f"call_{index}", "type": "function",
                     "function": {"name": name, "arguments": json.dumps({"words": len(cut)})}}]}
                choice["finish_reason"] = "tool_calls"
            elif chat:
                choice["message"] = {"role": "assistant", "content": text}
                if body.get("logprobs"):
                    choice["logprobs"] = {"content": [{"token": w, "logprob": lp} for w, lp in zip(cut, logprobs)]}
            else:
                choice["text"] = text
                if body.get("logprobs") is not None:
                    choice["logprobs"] = {"tokens": cut, "token_logprobs": logprobs}
            choices.append(choice)
        answer: dict[str, Any] = {"id": "cmpl-fake", "object": "chat.completion" if chat else "text_completion",
                                  "model": body.get("model"), "choices": choices}
        if self.usage:
            prompt_tokens = len(prompt)  # one per character: unlike any client-side estimate
            answer["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                               "total_tokens": prompt_tokens + completion_tokens}
        return answer


@pytest.fixture
def server():
    """A running fake server, stopped after the test."""
    with FakeOpenAIServer() as running:
        yield running


def ask(backend, **fields):
    """`backend.generate` of a request with these fields (messages: QUESTION unless given), run to completion."""
    fields.setdefault("messages", QUESTION)
    return asyncio.run(backend.generate(GenerationRequest(**fields)))
