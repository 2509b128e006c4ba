"""A server on a loopback port in a background thread: for tests, benchmarks and notebooks.

uvicorn runs its own event loop in the thread, so the served recipes' backends
live on that loop; the caller's thread stays free to be a client.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class BackgroundServer:
    """`with BackgroundServer(app) as server: ... server.url ...` — started, ready, then stopped."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int | None = None, startup_timeout: float = 60.0):
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        config = uvicorn.Config(app, host=self.host, port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"serve-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (ends in /v1)."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the server on {self.host}:{self.port} stopped while starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server on {self.host}:{self.port} did not start in {self.startup_timeout:g} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
