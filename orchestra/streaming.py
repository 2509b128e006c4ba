"""Where a run's partial output goes while it runs: decoded text, and progress events.

`orchestra serve` streams a reply before its recipe has finished: a single-sample
recipe's tokens as they are decoded, a multi-sample recipe's progress (each node
as it finishes). Neither is a return value of anything in between, so the
listener travels in a context variable: the server sets it around the run of one
choice, and whatever runs inside that run (every node's task copies the context)
finds it with `current_listener()`. The local backend sends text when its engine
decodes tokens of a one-sample call; the executor sends an event per finished node.
Outside a streamed request there is no listener and nothing is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StreamListener:
    """Callbacks, called on the event loop's thread."""

    #: Receives each new piece of a one-sample call's text as it is decoded (None: no tokens wanted).
    text: Callable[[str], None] | None = None
    #: Receives a small JSON-able dict per finished node.
    progress: Callable[[dict[str, Any]], None] | None = None


_LISTENER: ContextVar[StreamListener | None] = ContextVar("orchestra_stream_listener", default=None)


def current_listener() -> StreamListener | None:
    return _LISTENER.get()


@contextmanager
def listening(listener: StreamListener) -> Iterator[None]:
    """Tasks created inside the block (and theirs) send to `listener`."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)
