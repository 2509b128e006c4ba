"""A run's folder: results and traces written as they happen, so nothing is lost.

    run.json        what ran: recipe (and its fingerprint), task, split
    results.jsonl   one line per finished problem
    trace.jsonl     one line per node execution: inputs, outputs, usage, time
    summary.json    aggregates, rewritten at the end (and on interruption)

Rerunning into the same folder resumes: problems already in results.jsonl
(finished, or cut short by the budget) are skipped; failed ones are retried.
A line torn by a crash mid-write (power loss, kill -9) is cut off before the
resumed run appends, so every line stays one whole record. run.json and
summary.json are replaced atomically, so a crash leaves the old file or the new
one, never half of one.

`check_folder` tells, before anything slow runs, whether a path can hold
output at all, so a command fails at once with one line instead of after the
model has loaded.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from orchestra.recipe import Recipe
from orchestra.results import ProblemResult, RunSummary

_log = logging.getLogger(__name__)  # a library: silent unless the application configures logging
_log.addHandler(logging.NullHandler())
_BLOCK = 1 << 16


class RunFolderError(Exception):
    """The folder cannot hold this run: not a folder, not writable, or its run.json unreadable."""


class RunFolderMismatch(RunFolderError):
    """The folder holds a run of a different recipe or task; resuming would mix them."""


def check_folder(path: str | Path) -> None:
    """Raise RunFolderError unless `path` is, or can be made, a folder we can write in.

    Nothing is left behind: folders made to try are removed again.
    """
    path = Path(path)
    missing: list[Path] = []
    existing = path
    while not existing.exists() and existing != existing.parent:
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"lies under {existing}, which is a file"
        raise RunFolderError(f"{path} {where}, not a folder")
    try:
        for folder in reversed(missing):
            folder.mkdir()
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise RunFolderError(f"cannot write in {path}: {err.strerror or err}") from None
    finally:
        for folder in missing:
            try:
                folder.rmdir()
            except OSError:
                pass
    _read_meta(path / "run.json")


def _read_meta(meta_path: Path) -> dict[str, Any] | None:
    """What run.json records, None when there is none; RunFolderError when it is unreadable."""
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise RunFolderError(
            f"{meta_path} cannot be read ({err}); move it aside to start this folder afresh, or use another --out folder"
        ) from None
    if not isinstance(meta, dict):
        raise RunFolderError(f"{meta_path} does not describe a run; move it aside, or use another --out folder")
    return meta


def _cut_torn_line(path: Path) -> int:
    """Drop a last line that has no newline (a write cut short); return the bytes dropped."""
    try:
        with path.open("rb+") as handle:
            size = keep = handle.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return 0
            while keep > 0:  # back, a block at a time (traces grow large), to the last newline
                start = max(0, keep - _BLOCK)
                handle.seek(start)
                newline = handle.read(keep - start).rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                keep = start
            handle.truncate(keep)
            return size - keep
    except FileNotFoundError:
        return 0


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file beside it, so a reader (or a crash) never
    meets half of it; the temporary name is this process's own, so two writers never share one."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


class RunFolder:
    """The files of one run; `repaired` lists what opening it had to fix (torn last lines)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        check_folder(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.results_path = self.path / "results.jsonl"
        self.trace_path = self.path / "trace.jsonl"
        self.summary_path = self.path / "summary.json"
        self.meta_path = self.path / "run.json"
        self.repaired: list[str] = []
        for log, consequence in ((self.results_path, "; that problem reruns"), (self.trace_path, "")):
            dropped = _cut_torn_line(log)
            if dropped:
                note = f"{log} ended in a torn line ({dropped} bytes, an interrupted write): removed it{consequence}"
                self.repaired.append(note)
                _log.warning(note)

    def start(self, recipe: Recipe, task: str | None, split: str | None) -> None:
        """Record what runs here, or check that it is what ran here before."""
        if not self.check(recipe, task, split):
            write_atomically(self.meta_path, json.dumps(self._meta(recipe, task, split), indent=2))

    def check(self, recipe: Recipe, task: str | None, split: str | None) -> bool:
        """Whether a run is recorded here; RunFolderMismatch when it is not this recipe, task and split."""
        before = _read_meta(self.meta_path)
        if before is None:
            return False
        meta = self._meta(recipe, task, split)
        for key in ("fingerprint", "task", "split"):
            if before.get(key) != meta[key]:
                raise RunFolderMismatch(
                    f"{self.path} holds a run with a different {key} "
                    f"({before.get(key)!r} vs {meta[key]!r}); use another --out folder"
                )
        return True

    @staticmethod
    def _meta(recipe: Recipe, task: str | None, split: str | None) -> dict[str, Any]:
        return {
            "recipe": recipe.name,
            "fingerprint": recipe.fingerprint(),
            "task": task,
            "split": split,
            "definition": recipe.model_dump(mode="json"),
        }

    def finished(self) -> dict[str, ProblemResult]:
        """Results of problems that need no rerun (status ok or budget), by problem id."""
        done: dict[str, ProblemResult] = {}
        if not self.results_path.exists():
            return done
        for line in self.results_path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                result = ProblemResult.model_validate_json(line)
            except ValueError:
                continue  # an unreadable line: that problem simply reruns
            if result.status != "error":
                done[result.problem_id] = result
        return done

    def add_result(self, result: ProblemResult) -> None:
        self._append(self.results_path, result.model_dump(mode="json"))

    def add_trace(self, record: dict[str, Any]) -> None:
        self._append(self.trace_path, record)

    def write_summary(self, summary: RunSummary) -> None:
        write_atomically(self.summary_path, summary.model_dump_json(indent=2))

    @staticmethod
    def _append(path: Path, record: dict[str, Any]) -> None:
        with path.open("a") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
            handle.flush()
