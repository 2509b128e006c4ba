"""The generation cache: every sample ever generated, in SQLite, for replay.

A sample is keyed by (model, rendered prompt, sampling settings, seed, sample
index). Because a request's sample `i` is drawn from its own seeded stream, a
request for n=8 after one for n=4 replays samples 0-3 and generates only 4-7,
and a rerun of an interrupted run or a search trial that shares a node's
generations costs nothing. Unseeded requests are never cached: they are meant
to differ each time, and hidden states are never stored (they are large, and
only the requests that ask for them need them).

A damaged file (a torn copy, overwritten pages) is found when the cache is
opened, by SQLite's `quick_check` (about 3 ms per MB), or on the first read or
write that meets the damage, and is reported as `CacheCorrupted`, naming the
file. With `on_corrupt="move-aside"` the file is renamed to
`<name>.corrupt-<UTC time>` instead and a fresh, empty cache takes its place.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

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

#: SQLite's result codes for a damaged file (as opposed to a busy or read-only one).
_DAMAGED = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}

#: What to do with a damaged cache file: stop with `CacheCorrupted`, or rename it and start afresh.
OnCorrupt = Literal["fail", "move-aside"]

_T = TypeVar("_T")


class CacheCorrupted(RuntimeError):
    """The generation cache file is damaged; the message names it and the ways on."""

    def __init__(self, path: Path, detail: str):
        self.path, self.detail = path, detail
        super().__init__(
            f"generation cache {path} is corrupted ({detail}): move it aside and start a fresh one "
            "(`orchestra run --cache-recover`; in Python, on_corrupt='move-aside') or run without it (--no-cache)"
        )


def request_key(model_key: str, rendered_prompt: str, request: GenerationRequest) -> str:
    blob = json.dumps(
        {"model": model_key, "prompt": rendered_prompt, "sampling": request.sampling_key()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _damage(error: sqlite3.DatabaseError) -> str | None:
    """SQLite's message when `error` says the file is damaged, else None."""
    return str(error) if getattr(error, "sqlite_errorname", None) in _DAMAGED else None


class GenerationCache:
    """SQLite-backed sample store; safe to share between threads and processes (WAL)."""

    def __init__(self, path: str | Path, on_corrupt: OnCorrupt = "fail"):
        if on_corrupt not in ("fail", "move-aside"):
            raise ValueError(f"on_corrupt={on_corrupt!r}: expected 'fail' or 'move-aside'")
        self.path = Path(path)
        self.on_corrupt = on_corrupt
        #: Where a damaged file was moved (`on_corrupt="move-aside"`), if it was.
        self.moved_to: Path | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._damaged: str | None = None
        self.hits = 0
        self.misses = 0
        with self._lock:
            self._guarded(self._connection)

    def _connection(self) -> sqlite3.Connection:
        """The open database, opened (and checked) on first use and after a move aside."""
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            [verdict] = db.execute("PRAGMA quick_check(1)").fetchone()  # the first problem found
            if verdict != "ok":
                first = verdict.replace("*** in database main ***", "")
                raise CacheCorrupted(self.path, " ".join(first.split()))  # on one line
            db.execute(_SCHEMA)
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _guarded(self, operation: Callable[[], _T]) -> _T:
        """Run `operation` (lock held), turning a damaged file into `CacheCorrupted`, or into a
        fresh cache and one more try where `on_corrupt` says to move the file aside."""
        if self._damaged is not None:
            raise CacheCorrupted(self.path, self._damaged)
        try:
            return operation()
        except (sqlite3.DatabaseError, CacheCorrupted) as error:
            detail = error.detail if isinstance(error, CacheCorrupted) else _damage(error)
            if detail is None:
                raise
            if self.on_corrupt != "move-aside" or self.moved_to is not None:
                self._damaged = detail
                raise CacheCorrupted(self.path, detail) from None
        self._move_aside()
        return operation()  # on the fresh file

    def _move_aside(self) -> None:
        """Rename the damaged file (and its WAL files) to `<name>.corrupt-<UTC time>`; the next
        use opens a fresh one in its place."""
        if self._db is not None:
            self._db.close()
            self._db = None
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        for suffix in ("-wal", "-shm", ""):
            part = Path(f"{self.path}{suffix}")
            if part.exists():
                part.rename(f"{aside}{suffix}")
        self.moved_to = aside

    def lookup(self, key: str, first: int, count: int) -> dict[int, tuple[Completion, int]]:
        """Cached samples among indices [first, first + count): index -> (completion, prompt tokens)."""
        with self._lock:
            rows = self._guarded(
                lambda: self._connection().execute(
                    "SELECT sample_index, completion, prompt_tokens FROM samples "
                    "WHERE key = ? AND sample_index >= ? AND sample_index < ?",
                    (key, first, first + count),
                ).fetchall()
            )
        found = {i: (_without_hidden_states(Completion.model_validate_json(c)), p) for i, c, p in rows}
        self.hits += len(found)
        self.misses += count - len(found)
        return found

    def store(self, key: str, first: int, completions: list[Completion], prompt_tokens: int) -> None:
        rows = [
            (key, first + i, _without_hidden_states(c).model_dump_json(), prompt_tokens)
            for i, c in enumerate(completions)
        ]

        def write() -> None:
            db = self._connection()
            db.executemany(
                "INSERT OR REPLACE INTO samples (key, sample_index, completion, prompt_tokens) VALUES (?, ?, ?, ?)",
                rows,
            )
            db.commit()

        with self._lock:
            self._guarded(write)

    def count(self) -> int:
        """Samples stored (a method, not __len__: an empty cache must still be truthy)."""
        with self._lock:
            return self._guarded(lambda: self._connection().execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _without_hidden_states(completion: Completion) -> Completion:
    return completion if completion.hidden_states is None else completion.model_copy(update={"hidden_states": None})
