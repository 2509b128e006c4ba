"""The generation cache: every sample ever generated, in SQLite, for replay.

A sample is keyed by (model, rendered prompt, sampling settings, seed, sample
index). Because a request's sample `i` is drawn from its own seeded stream, a
request for n=8 after one for n=4 replays samples 0-3 and generates only 4-7,
and a rerun of an interrupted run or a search trial that shares a node's
generations costs nothing. Unseeded requests are never cached: they are meant
to differ each time.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

from orchestra.backends import Completion, GenerationRequest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    key TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    completion TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    created TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (key, sample_index)
)
"""


def request_key(model_key: str, rendered_prompt: str, request: GenerationRequest) -> str:
    blob = json.dumps(
        {"model": model_key, "prompt": rendered_prompt, "sampling": request.sampling_key()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class GenerationCache:
    """SQLite-backed sample store; safe to share between threads and processes (WAL)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.commit()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def lookup(self, key: str, first: int, count: int) -> dict[int, tuple[Completion, int]]:
        """Cached samples among indices [first, first + count): index -> (completion, prompt tokens)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sample_index, completion, prompt_tokens FROM samples "
                "WHERE key = ? AND sample_index >= ? AND sample_index < ?",
                (key, first, first + count),
            ).fetchall()
        found = {i: (Completion.model_validate_json(c), p) for i, c, p in rows}
        self.hits += len(found)
        self.misses += count - len(found)
        return found

    def store(self, key: str, first: int, completions: list[Completion], prompt_tokens: int) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO samples (key, sample_index, completion, prompt_tokens) "
                "VALUES (?, ?, ?, ?)",
                [(key, first + i, c.model_dump_json(), prompt_tokens) for i, c in enumerate(completions)],
            )
            self._db.commit()

    def count(self) -> int:
        """Samples stored (a method, not __len__: an empty cache must still be truthy)."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
