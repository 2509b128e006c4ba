"""`orchestra serve RECIPE ...`: recipes behind an OpenAI-compatible API.

The address is taken before the models load and listened on once they have:
a port in use fails at once in one line, and "serving" is printed only when it
is true.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer

from orchestra.backends import BackendUnavailable
from orchestra.cli.inputs import load_recipe_or_fail, open_cache
from orchestra.models import ModelNotFound
from orchestra.terminal import console, fail


def serve(
    recipes: Annotated[list[Path], typer.Argument(help="Recipe YAML files; each is served as a model named after the recipe.")],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key_env: Annotated[Optional[str], typer.Option(help="Require clients to send the key held in this environment variable.")] = None,
    max_n: Annotated[int, typer.Option(help="Most choices (recipe runs) per request.")] = 4,
    max_tokens_per_request: Annotated[Optional[int], typer.Option(help="Most completion tokens one request may make a recipe spend, all its choices together (a client's max_tokens is per choice).")] = None,
    max_request_bytes: Annotated[int, typer.Option(help="Largest request body accepted.")] = 1_000_000,
    concurrency: Annotated[int, typer.Option(help="Recipe runs in flight at once; the backend batches their calls.")] = 64,
    cache: Annotated[Optional[Path], typer.Option(help="Generation cache (SQLite) to read and write; default: none. Seeded requests replay from it.")] = None,
    allow_oracle: Annotated[bool, typer.Option("--allow-oracle", help="Serve recipes that choose with an oracle scorer (task, execution), which reads the reference answer: for measurement only.")] = False,
) -> None:
    """Serve recipes through an OpenAI-compatible API (/v1/chat/completions, /v1/models, /health)."""
    import os

    import uvicorn

    from orchestra.server import ServeSettings, create_app

    loaded = [load_recipe_or_fail(path) for path in recipes]
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise fail(f"--api-key-env {api_key_env}: that environment variable is not set")
    try:
        settings = ServeSettings(
            api_key=api_key, max_n=max_n, max_tokens_per_request=max_tokens_per_request,
            max_request_bytes=max_request_bytes, concurrency=concurrency, allow_oracle=allow_oracle,
        )
    except ValueError as err:
        raise fail(str(err)) from None
    address = _bound_socket(host, port)
    with address:
        store = open_cache(cache) if cache else None
        try:
            with console.status("loading models..."):
                application = create_app(loaded, settings, store)
        except (ModelNotFound, BackendUnavailable, ValueError) as err:
            raise fail(str(err)) from None
        address.listen(2048)
        names = ", ".join(r.name for r in loaded)
        console.print(f"serving {names} at http://{host}:{port}/v1" + (" (API key required)" if api_key else ""))
        server = uvicorn.Server(uvicorn.Config(application, log_level="warning", lifespan="off"))
        server.run(sockets=[address])


def _bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening), or a one-line failure."""
    try:
        family, kind, proto, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise fail(f"--host {host}: not an address of this machine ({err.strerror})") from None
    address = socket.socket(family, kind, proto)
    address.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart need not wait
    try:
        address.bind(where)
    except OSError as err:
        address.close()
        why = "is already in use" if err.errno == errno.EADDRINUSE else f"cannot be listened on: {err.strerror}"
        raise fail(f"{host}:{port} {why} (choose another --port or --host)") from None
    return address
